// Package veil is a thin helper over the generated veil.v1 stubs (veil.dev/sdk/go/veil/v1).
//
//	bob, err := veil.Connect(ctx, "")              // $VEIL_API, else the default socket
//	_, err = bob.CreateListener(ctx, "listener", veil.TrustEveryone())
//	relay, err := bob.CreateRelay(ctx, "/tcp/hub:4000", "bob")
//	err = bob.Serve(ctx, "echoer", func(m *veil.Message) error { return m.Reply(m.Payload()) })
//
//	ch, err := alice.OpenChannel(ctx, "/tcp/hub:4000/service/forward_to_bob/service/listener", veil.TrustEveryone())
//	echo, err := alice.Request(ctx, ch.Route+"/service/echoer", []byte("Hello"))
//
// Errors are gRPC status errors; Reason(err) gives the google.rpc.ErrorInfo reason.
package veil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	veilv1 "veil.dev/sdk/go/veil/v1"
)

// DefaultAPI is $VEIL_API, else unix:$VEIL_STATE_DIR/api.sock, else unix:$HOME/.veil/api.sock.
func DefaultAPI() string {
	if api := os.Getenv("VEIL_API"); api != "" {
		return api
	}
	state := os.Getenv("VEIL_STATE_DIR")
	if state == "" {
		home, _ := os.UserHomeDir()
		state = filepath.Join(home, ".veil")
	}
	return "unix:" + filepath.Join(state, "api.sock")
}

// Reason is the google.rpc.ErrorInfo reason of a failed call ("" when none).
func Reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// TrustEveryone accepts any identity (each message still says who sent it).
func TrustEveryone() *veilv1.TrustPolicy {
	return &veilv1.TrustPolicy{Policy: &veilv1.TrustPolicy_TrustEveryone{TrustEveryone: true}}
}

// TrustIdentifier accepts one identifier.
func TrustIdentifier(id string) *veilv1.TrustPolicy {
	return &veilv1.TrustPolicy{Policy: &veilv1.TrustPolicy_TrustIdentifier{TrustIdentifier: id}}
}

// Sidecar is a connection to one veil sidecar's API.
type Sidecar struct {
	Conn       *grpc.ClientConn
	Node       veilv1.NodeServiceClient
	Identities veilv1.IdentityServiceClient
	Channels   veilv1.SecureChannelServiceClient
	Relays     veilv1.RelayServiceClient
	Messaging  veilv1.MessagingServiceClient
}

// Connect dials target ("" = DefaultAPI()) and waits (up to ctx) until the sidecar answers.
func Connect(ctx context.Context, target string) (*Sidecar, error) {
	if target == "" {
		target = DefaultAPI()
	}
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("no veil sidecar answers at %s (is veild running?): %w", target, err)
	}
	return &Sidecar{Conn: conn, Node: veilv1.NewNodeServiceClient(conn),
		Identities: veilv1.NewIdentityServiceClient(conn), Channels: veilv1.NewSecureChannelServiceClient(conn),
		Relays: veilv1.NewRelayServiceClient(conn), Messaging: veilv1.NewMessagingServiceClient(conn)}, nil
}

// Close closes the connection.
func (s *Sidecar) Close() error { return s.Conn.Close() }

// Identity returns an identity's public part ("" = "default").
func (s *Sidecar) Identity(ctx context.Context, name string) (*veilv1.Identity, error) {
	if name == "" {
		name = "default"
	}
	return s.Identities.GetIdentity(ctx, &veilv1.GetIdentityRequest{Name: name})
}

// CreateListener creates a secure channel listener for identity "default".
func (s *Sidecar) CreateListener(ctx context.Context, address string, trust *veilv1.TrustPolicy) (*veilv1.SecureChannelListener, error) {
	return s.Channels.CreateSecureChannelListener(ctx, &veilv1.CreateSecureChannelListenerRequest{
		Address: address, Identity: "default", TrustPolicy: trust})
}

// OpenChannel opens a secure channel to the listener at route.
func (s *Sidecar) OpenChannel(ctx context.Context, route string, trust *veilv1.TrustPolicy) (*veilv1.SecureChannel, error) {
	return s.Channels.CreateSecureChannel(ctx, &veilv1.CreateSecureChannelRequest{
		Route: route, Identity: "default", TrustPolicy: trust, TimeoutMs: 10000})
}

// CreateRelay registers a relay on the hub at hubRoute ("" name: the hub picks one).
func (s *Sidecar) CreateRelay(ctx context.Context, hubRoute, name string) (*veilv1.Relay, error) {
	return s.Relays.CreateRelay(ctx, &veilv1.CreateRelayRequest{HubRoute: hubRoute, Name: name, Identity: "default"})
}

// Send sends one message.
func (s *Sidecar) Send(ctx context.Context, route string, payload []byte) error {
	_, err := s.Messaging.Send(ctx, &veilv1.SendRequest{Messages: []*veilv1.OutgoingMessage{{Route: route, Payload: payload}}})
	return err
}

// Request sends one message and waits (up to ctx's deadline) for one reply.
func (s *Sidecar) Request(ctx context.Context, route string, payload []byte) (*veilv1.Delivery, error) {
	r, err := s.Messaging.Request(ctx, &veilv1.RequestRequest{Message: &veilv1.OutgoingMessage{Route: route, Payload: payload}})
	if err != nil {
		return nil, err
	}
	return r.Reply, nil
}

// Message is a delivery on a Serve stream.
type Message struct {
	*veilv1.Delivery
	stream *serveStream
}

// Reply answers along the message's return route.
func (m *Message) Reply(payload []byte) error { return m.stream.send(m.ReturnRoute, payload) }

type serveStream struct {
	mu     sync.Mutex
	stream veilv1.MessagingService_ServeClient
	batch  uint64
}

func (s *serveStream) write(r *veilv1.ServeRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(r)
}

func (s *serveStream) send(route string, payload []byte) error {
	s.mu.Lock()
	s.batch++
	batch := s.batch
	s.mu.Unlock()
	return s.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Send{Send: &veilv1.ServeRequest_SendBatch{
		BatchId: batch, Messages: []*veilv1.OutgoingMessage{{Route: route, Payload: payload}}}}})
}

// Serve serves address until ctx ends or handler fails, acknowledging each batch once handled.
func (s *Sidecar) Serve(ctx context.Context, address string, handler func(*Message) error) error {
	stream, err := s.Messaging.Serve(ctx)
	if err != nil {
		return err
	}
	ss := &serveStream{stream: stream}
	if err := ss.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Open_{Open: &veilv1.ServeRequest_Open{Address: address}}}); err != nil {
		return err
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		batch := r.GetDeliveries().GetDeliveries()
		for _, d := range batch {
			if err := handler(&Message{Delivery: d, stream: ss}); err != nil {
				return err
			}
		}
		if len(batch) > 0 {
			ack := &veilv1.ServeRequest_Ack{Sequence: batch[len(batch)-1].Sequence}
			if err := ss.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Ack_{Ack: ack}}); err != nil {
				return err
			}
		}
	}
}

// WithTimeout is context.WithTimeout on Background, for short calls.
func WithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
