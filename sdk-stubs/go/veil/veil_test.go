package veil

// Against a real veild ($VEILD; tests/sdk/go_sdk_test.sh runs these under ctest): Serve on the
// serve socket and on gRPC, the sidecar's refusals and its status when it ends the stream.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type node struct {
	cmd    *exec.Cmd
	dir    string
	api    string
	mu     sync.Mutex
	log    strings.Builder
	exited chan error
}

func (n *node) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.Write(p)
}

func (n *node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

// startNode starts a veild in a temp dir and waits until it is ready.
func startNode(t *testing.T, extra ...string) *node {
	veild := os.Getenv("VEILD")
	if veild == "" {
		t.Fatal("$VEILD must name the veild binary")
	}
	n := &node{dir: t.TempDir(), exited: make(chan error, 1)}
	n.cmd = exec.Command(veild, append([]string{"--state-dir", filepath.Join(n.dir, "state")}, extra...)...)
	n.cmd.Stdout, n.cmd.Stderr = n, n
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.exited <- n.cmd.Wait() }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(os.Interrupt)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(n.Log(), " ready: "); {
		if time.Now().After(deadline) {
			t.Fatalf("veild did not start:\n%s", n.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.api = "unix:" + filepath.Join(n.dir, "state", "api.sock")
	return n
}

func connect(t *testing.T, n *node) *Sidecar {
	ctx, cancel := WithTimeout(30 * time.Second)
	defer cancel()
	s, err := Connect(ctx, n.api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// serveInBackground serves address with an echo handler; the channel yields Serve's result.
func serveInBackground(ctx context.Context, s *Sidecar, address string) chan error {
	result := make(chan error, 1)
	go func() {
		result <- s.Serve(ctx, address, func(m *Message) error { return m.Reply(m.Payload) })
	}()
	return result
}

// waitServed waits until the sidecar's log says address is served, on which carrier.
func waitServed(t *testing.T, n *node, address, carrier string) {
	want := "app serves address " + address + " (" + carrier + ")"
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(n.Log(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, n.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echo(t *testing.T, s *Sidecar, address, text string) {
	ctx, cancel := WithTimeout(20 * time.Second)
	defer cancel()
	reply, err := s.Request(ctx, "/service/"+address, []byte(text))
	if err != nil || string(reply.Payload) != text {
		t.Fatalf("echo of %q: %v, %v", text, reply, err)
	}
}

func TestServeUsesTheSocketAndReportsRefusalsWithTheirReasons(t *testing.T) {
	n := startNode(t, "--api-max-serve-streams", "1")
	s := connect(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	served := serveInBackground(ctx, s, "echoer")
	waitServed(t, n, "echoer", "serve socket")
	echo(t, s, "echoer", "hello")
	// The one stream slot is taken.
	err := s.Serve(context.Background(), "second", func(*Message) error { return nil })
	if status.Code(err) != codes.ResourceExhausted || Reason(err) != "TOO_MANY_STREAMS" {
		t.Errorf("second stream: %v (reason %q)", err, Reason(err))
	}
	// Ending ctx ends the stream, as it cancels a gRPC call.
	cancel()
	select {
	case err := <-served:
		if status.Code(err) != codes.Canceled {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestSendDeliveredReturnsOnceTheAppAckedIt(t *testing.T) {
	n := startNode(t)
	app, sender := connect(t, n), connect(t, n)
	release := make(chan struct{})
	handled := make(chan string, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go app.Serve(ctx, "sink", func(m *Message) error {
		handled <- string(m.Payload)
		<-release // the batch is acked once the handler returns
		return nil
	})
	waitServed(t, n, "sink", "serve socket")
	sendCtx, sendCancel := WithTimeout(20 * time.Second)
	defer sendCancel()
	delivered := make(chan error, 1)
	go func() { delivered <- sender.SendDelivered(sendCtx, "/service/sink", []byte("hello")) }()
	if got := <-handled; got != "hello" {
		t.Fatalf("the app got %q", got)
	}
	select {
	case err := <-delivered:
		t.Fatalf("delivered before the app had handled it: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-delivered; err != nil {
		t.Fatalf("SendDelivered: %v", err)
	}
	// A delivered send the sidecar refuses returns its reason.
	err := sender.SendDelivered(sendCtx, "/tcp/127.0.0.1:9/service/x", []byte("x"))
	if Reason(err) != "PLAINTEXT_EGRESS_REFUSED" {
		t.Errorf("to a plaintext route: %v (reason %q)", err, Reason(err))
	}
	// An app that goes without acking: the message is reported dropped.
	go app.Serve(ctx, "fragile", func(*Message) error { return errors.New("handler broke") })
	waitServed(t, n, "fragile", "serve socket")
	err = sender.SendDelivered(sendCtx, "/service/fragile", []byte("x"))
	if Reason(err) != "MESSAGE_DROPPED" {
		t.Errorf("to an app that went: %v (reason %q)", err, Reason(err))
	}
}

func TestABadAddressIsRefusedWithItsReason(t *testing.T) {
	s := connect(t, startNode(t))
	err := s.Serve(context.Background(), "not/an address", func(*Message) error { return nil })
	if status.Code(err) != codes.InvalidArgument || Reason(err) != "INVALID_ADDRESS" {
		t.Errorf("%v (reason %q)", err, Reason(err))
	}
}

func TestAReplyAfterTheSidecarEndedTheStreamReturnsItsStatus(t *testing.T) {
	n := startNode(t)
	app, sender := connect(t, n), connect(t, n)
	result := make(chan error, 1)
	var replyErr error
	go func() {
		result <- app.Serve(context.Background(), "late_replier", func(m *Message) error {
			n.cmd.Process.Signal(os.Interrupt)
			if err := <-n.exited; err != nil {
				t.Errorf("veild exited with %v", err)
			}
			n.exited <- nil // for the cleanup
			replyErr = m.Reply([]byte("too late"))
			return replyErr
		})
	}()
	waitServed(t, n, "late_replier", "serve socket")
	ctx, cancel := WithTimeout(10 * time.Second)
	defer cancel()
	if err := sender.Send(ctx, "/service/late_replier", []byte("ping")); err != nil {
		t.Fatal(err)
	}
	err := <-result
	if replyErr == nil {
		t.Error("a reply after the stream ended did not fail")
	}
	if status.Code(err) != codes.Unavailable || Reason(err) != "NODE_SHUTTING_DOWN" {
		t.Errorf("Serve: %v (reason %q), want the sidecar's NODE_SHUTTING_DOWN", err, Reason(err))
	}
}

func TestServeFallsBackToGrpcWhenTheSocketCannotBeReached(t *testing.T) {
	elsewhere := filepath.Join(t.TempDir(), "serve.sock")
	n := startNode(t, "--serve-socket", elsewhere)
	if err := os.Remove(elsewhere); err != nil { // as if in another container
		t.Fatal(err)
	}
	s := connect(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	served := serveInBackground(ctx, s, "echoer")
	waitServed(t, n, "echoer", "gRPC")
	echo(t, s, "echoer", "via gRPC")
	cancel()
	if err := <-served; status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Errorf("Serve after cancel: %v", err)
	}
}
