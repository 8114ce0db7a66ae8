#!/usr/bin/env python3
"""The error reasons: sidecar/common/error_reason.h defines each once, docs/api.md's reason table
lists exactly those, and no code outside error_reason.h spells a reason as a bare string (it
names the constant), so the table cannot drift from the code."""
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def defined_reasons():
    with open(os.path.join(ROOT, "sidecar", "common", "error_reason.h")) as f:
        text = f.read()
    body = text[text.index("namespace reason {"):text.index("}  // namespace reason")]
    return dict(re.findall(r'inline constexpr absl::string_view (k\w+) = "([A-Z0-9_]+)";', body))


def documented_reasons():
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        text = f.read()
    table = text[text.index("| code | reason | when |"):]
    table = table[:table.index("\n\n")]
    reasons = set()
    for row in table.splitlines()[2:]:
        cells = row.split("|")
        reasons.update(re.findall(r"`([A-Z0-9_]+)`", cells[2]))
    return reasons


class ReasonsTest(unittest.TestCase):
    def test_every_reason_is_documented_and_every_documented_one_exists(self):
        defined = set(defined_reasons().values())
        documented = documented_reasons()
        self.assertGreater(len(defined), 50)
        self.assertEqual(sorted(defined - documented), [], "reasons missing from docs/api.md")
        self.assertEqual(sorted(documented - defined), [], "docs/api.md lists reasons the code has not")

    def test_each_reason_is_defined_once(self):
        values = list(defined_reasons().values())
        self.assertEqual(len(values), len(set(values)))

    def test_code_names_reasons_by_their_constants(self):
        defined = set(defined_reasons().values())
        bare = []
        for root, _, files in os.walk(os.path.join(ROOT, "sidecar")):
            for name in files:
                if not name.endswith((".cc", ".h")) or name.endswith("_test.cc"):
                    continue
                path = os.path.join(root, name)
                if path.endswith(os.path.join("common", "error_reason.h")):
                    continue
                with open(path) as f:
                    for number, line in enumerate(f, 1):
                        for literal in re.findall(r'"([A-Z][A-Z0-9_]*)"', line):
                            if literal in defined:
                                bare.append(f"{os.path.relpath(path, ROOT)}:{number}: \"{literal}\"")
        self.assertEqual(bare, [], "say reason::k..., not the string")


if __name__ == "__main__":
    unittest.main(verbosity=2)
