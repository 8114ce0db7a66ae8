// Alice in Go: a secure channel to Bob's listener through the hub; echoes each stdin line.
//
//	alice API LISTENER_ROUTE
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"time"

	"veil.dev/sdk/go/veil"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: alice API LISTENER_ROUTE < lines")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice, err := veil.Connect(ctx, os.Args[1])
	check(err)
	channel, err := alice.OpenChannel(ctx, os.Args[2], veil.TrustEveryone())
	check(err)
	fmt.Println("[✓] End-to-end encrypted secure channel was established with", channel.RemoteIdentifier)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		echo, err := alice.Request(ctx, channel.Route+"/service/echoer", lines.Bytes())
		check(err)
		fmt.Println("Alice received an echo:", string(echo.Payload))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "alice: %v [%s]\n", err, veil.Reason(err))
		os.Exit(1)
	}
}
