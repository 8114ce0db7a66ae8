# Sourced by the portal examples: a hub, Bob's sidecar behind it (no --tcp-listen: reached only
# through the hub) with a relay named bob, and Alice's sidecar, all in $work on loopback.
# Defines bob / alice (the veil CLI on each), identifier_of, port, and $route (to Bob's listener).
# Expects $build and $work; the caller's EXIT trap stops the daemons (they are its jobs).
veild="$build/sidecar/daemon/veild" veil="$build/sidecar/cli/veil"
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bob() { "$veil" --api "unix:$work/bob/api.sock" "$@"; }
alice() { "$veil" --api "unix:$work/alice/api.sock" "$@"; }
identifier_of() { "$1" --json identity show | sed -n 's/.*"identifier": "\(I[0-9a-f]*\)".*/\1/p'; }
hub_port=$(port)
"$veild" --state-dir "$work/hub" --hub --tcp-listen "127.0.0.1:$hub_port" 2>"$work/hub.log" &
"$veild" --state-dir "$work/bob" 2>"$work/bob.log" &
"$veild" --state-dir "$work/alice" 2>"$work/alice.log" &
until bob status >/dev/null 2>&1 && alice status >/dev/null 2>&1; do sleep 0.1; done
bob listener create listener --trust "$(identifier_of alice)"   # only Alice opens channels to Bob
bob relay create "/tcp/127.0.0.1:$hub_port" --name bob
route="/tcp/127.0.0.1:$hub_port/service/forward_to_bob/service/listener"
