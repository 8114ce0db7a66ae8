// Test support: a self-signed TLS certificate for 127.0.0.1 and localhost, made by Debian's
// openssl command in a directory of the caller's, for WebSocket-over-TLS tests (the certificate
// is its own CA: give it to the client as --tls-ca, or as SSL_CERT_FILE).
//
// Thread-safety: a function of the file system.
#ifndef VEIL_TESTS_SUPPORT_TEST_CERTIFICATE_H_
#define VEIL_TESTS_SUPPORT_TEST_CERTIFICATE_H_

#include <cstdlib>
#include <string>

namespace veil::testing {

struct TestCertificate {
  std::string cert;  // PEM certificate path
  std::string key;   // PEM private key path
};

// Writes `dir`/`name`.pem and `dir`/`name`.key (subject CN=`name`); empty paths on failure.
inline TestCertificate MakeTestCertificate(const std::string& dir,
                                           const std::string& name = "localhost") {
  TestCertificate out{dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  const std::string command =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=" +
      name + " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '" + out.key + "' -out '" +
      out.cert + "' >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) return {};
  return out;
}

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_TEST_CERTIFICATE_H_
