// Bob in Go: a secure channel listener, a relay on the hub, and an echoer.
//
//	bob API [HUB_ROUTE]
package main

import (
	"context"
	"fmt"
	"os"

	"veil.dev/sdk/go/veil"
)

func main() {
	ctx := context.Background()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bob API [HUB_ROUTE]")
		os.Exit(2)
	}
	bob, err := veil.Connect(ctx, os.Args[1])
	check(err)
	l, err := bob.EnsureListener(ctx, "listener", veil.TrustEveryone())
	check(err)
	fmt.Println("[✓] Secure channel listener at /service/listener as", l.Identifier)
	if len(os.Args) > 2 {
		relay, err := bob.EnsureRelay(ctx, os.Args[2], "") // the hub picks the name; kept on rerun
		check(err)
		fmt.Println("[✓] Relay was created on the hub.\nForwarding address for Bob is:", relay.Address)
	}
	check(bob.Serve(ctx, "echoer", func(m *veil.Message) error {
		fmt.Printf("[✓] Address: echoer, Received: %s (from %s)\n", m.Payload, m.Sender.GetIdentifier())
		return m.Reply(m.Payload)
	}))
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "bob: %v [%s]\n", err, veil.Reason(err))
		os.Exit(1)
	}
}
