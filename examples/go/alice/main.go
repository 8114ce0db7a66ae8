// Alice in Go: a secure channel to Bob's listener through the hub; echoes each stdin line.
//
//	alice API LISTENER_ROUTE
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
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
	interrupted := make(chan os.Signal, 1) // Ctrl-C: stop reading, then clean up
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	lines := make(chan string)
	go func() {
		for scanner := bufio.NewScanner(os.Stdin); scanner.Scan(); {
			lines <- scanner.Text()
		}
		close(lines)
	}()
	err = echo(ctx, alice, channel.Route, lines, interrupted)
	// Done: the channel ends on both sidecars.
	if closeErr := alice.CloseChannel(context.Background(), channel.Address); err == nil {
		err = closeErr
	}
	check(err)
}

func echo(ctx context.Context, alice *veil.Sidecar, route string, lines <-chan string, stop <-chan os.Signal) error {
	for {
		select {
		case <-stop:
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			echo, err := alice.Request(ctx, route+"/service/echoer", []byte(line))
			if err != nil {
				return err
			}
			fmt.Println("Alice received an echo:", string(echo.Payload))
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "alice: %v [%s]\n", err, veil.Reason(err))
		os.Exit(1)
	}
}
