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
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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
	dial := func(receiveLimit int) (*grpc.ClientConn, error) {
		return grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock(),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(receiveLimit)))
	}
	const defaultReceiveLimit = 64 << 20 // the sidecar's default --api-max-request-bytes
	conn, err := dial(defaultReceiveLimit)
	if err != nil {
		return nil, fmt.Errorf("no veil sidecar answers at %s (is veild running?): %w", target, err)
	}
	// A delivery can be as large as the sidecar's own message limit: accept that much.
	nodeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	node, err := veilv1.NewNodeServiceClient(conn).GetNode(nodeCtx, &veilv1.GetNodeRequest{})
	cancel()
	if err == nil && node.GetMaxMessageBytes() > defaultReceiveLimit {
		limit := node.GetMaxMessageBytes()
		if limit > math.MaxInt32 {
			limit = math.MaxInt32
		}
		conn.Close()
		if conn, err = dial(int(limit)); err != nil {
			return nil, fmt.Errorf("no veil sidecar answers at %s (is veild running?): %w", target, err)
		}
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

// EnsureListener is CreateListener that an app can run again: a listener already at address
// with the same identity and trust policy is returned; one that differs is ALREADY_EXISTS.
func (s *Sidecar) EnsureListener(ctx context.Context, address string, trust *veilv1.TrustPolicy) (*veilv1.SecureChannelListener, error) {
	return s.Channels.CreateSecureChannelListener(ctx, &veilv1.CreateSecureChannelListenerRequest{
		Address: address, Identity: "default", TrustPolicy: trust, ExistOk: true})
}

// DeleteListener stops the listener at address; channels it accepted stay up.
func (s *Sidecar) DeleteListener(ctx context.Context, address string) error {
	_, err := s.Channels.DeleteSecureChannelListener(ctx, &veilv1.DeleteSecureChannelListenerRequest{Address: address})
	return err
}

// CloseChannel closes the channel at address (SecureChannel.Address) and tells the other end.
func (s *Sidecar) CloseChannel(ctx context.Context, address string) error {
	_, err := s.Channels.DeleteSecureChannel(ctx, &veilv1.DeleteSecureChannelRequest{Address: address})
	return err
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

// EnsureRelay is CreateRelay that an app can run again: the relay this sidecar already keeps on
// that hub (named name, or any when name is "") is returned, with its forwarding address.
func (s *Sidecar) EnsureRelay(ctx context.Context, hubRoute, name string) (*veilv1.Relay, error) {
	return s.Relays.CreateRelay(ctx, &veilv1.CreateRelayRequest{HubRoute: hubRoute, Name: name, Identity: "default", ExistOk: true})
}

// DeleteRelay unregisters relay name from its hub (freeing the name) and stops it.
func (s *Sidecar) DeleteRelay(ctx context.Context, name string) error {
	_, err := s.Relays.DeleteRelay(ctx, &veilv1.DeleteRelayRequest{Name: name})
	return err
}

// Send sends one message.
func (s *Sidecar) Send(ctx context.Context, route string, payload []byte) error {
	_, err := s.Messaging.Send(ctx, &veilv1.SendRequest{Messages: []*veilv1.OutgoingMessage{{Route: route, Payload: payload}}})
	return err
}

// SendDelivered sends one message and waits (up to ctx's deadline) until its far app
// acknowledged it: a delivery receipt (docs/api.md). Otherwise it returns the sidecar's error,
// whose Reason says why, e.g. DELIVERY_UNKNOWN when its secure channel closed before the far
// end confirmed it, MESSAGE_DROPPED when the app went without acking. For a future, run it in
// a goroutine.
func (s *Sidecar) SendDelivered(ctx context.Context, route string, payload []byte) error {
	_, err := s.Messaging.Send(ctx, &veilv1.SendRequest{
		Messages:         []*veilv1.OutgoingMessage{{Route: route, Payload: payload}},
		DeliveryReceipts: true,
	})
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

// serveCarrier is what a Serve stream runs on: the gRPC call (MessagingService_ServeClient) or
// the serve socket.
type serveCarrier interface {
	Send(*veilv1.ServeRequest) error
	Recv() (*veilv1.ServeResponse, error)
}

type serveStream struct {
	mu     sync.Mutex
	stream serveCarrier
	batch  uint64
	broken bool // a write failed: the sidecar ended the stream, Recv tells why
}

func (s *serveStream) write(r *veilv1.ServeRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.stream.Send(r)
	if err != nil {
		s.broken = true
	}
	return err
}

func (s *serveStream) send(route string, payload []byte) error {
	s.mu.Lock()
	s.batch++
	batch := s.batch
	s.mu.Unlock()
	return s.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Send{Send: &veilv1.ServeRequest_SendBatch{
		BatchId: batch, FailuresOnly: true, Messages: []*veilv1.OutgoingMessage{{Route: route, Payload: payload}}}}})
}

// isBroken reports whether a write failed (Replies may come from the handler's goroutines).
func (s *serveStream) isBroken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// end reads on after a failed write, to what ended the stream: the sidecar's status (for
// example NODE_SHUTTING_DOWN), nil if it ended normally, else writeErr.
func (s *serveStream) end(writeErr error) error {
	for {
		if _, err := s.stream.Recv(); err != nil {
			if err == io.EOF {
				return writeErr
			}
			return err
		}
	}
}

// Serve serves address until ctx ends or handler fails, acknowledging each batch once handled.
// It uses the sidecar's serve socket when this process can reach it (Node.serve_socket;
// docs/api.md, "The serve socket"), else a gRPC Serve call. When the sidecar ends the stream it
// returns the sidecar's status (Reason(err) == "NODE_SHUTTING_DOWN", ...); nil when it ends
// normally.
func (s *Sidecar) Serve(ctx context.Context, address string, handler func(*Message) error) error {
	if node, err := s.Node.GetNode(ctx, &veilv1.GetNodeRequest{}); err == nil && node.ServeSocket != "" {
		if conn, err := (&net.Dialer{}).DialContext(ctx, "unix", node.ServeSocket); err == nil {
			// Reachable: the serve socket. Otherwise (another container, another user) gRPC.
			socket := &socketCarrier{conn: conn, in: bufio.NewReaderSize(conn, 256<<10)}
			defer conn.Close()
			served := make(chan struct{})
			defer close(served)
			go func() { // ctx ending ends the stream, as it cancels a gRPC call
				select {
				case <-ctx.Done():
					conn.Close()
				case <-served:
				}
			}()
			err := serveOn(socket, address, handler)
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return err
		}
	}
	stream, err := s.Messaging.Serve(ctx)
	if err != nil {
		return err
	}
	return serveOn(stream, address, handler)
}

func serveOn(carrier serveCarrier, address string, handler func(*Message) error) error {
	ss := &serveStream{stream: carrier}
	if err := ss.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Open_{Open: &veilv1.ServeRequest_Open{Address: address}}}); err != nil {
		return ss.end(err)
	}
	for {
		r, err := carrier.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		batch := r.GetDeliveries().GetDeliveries()
		for _, d := range batch {
			if err := handler(&Message{Delivery: d, stream: ss}); err != nil {
				if ss.isBroken() { // the handler's Reply failed: say why the stream ended
					return ss.end(err)
				}
				return err
			}
		}
		if len(batch) > 0 {
			ack := &veilv1.ServeRequest_Ack{Sequence: batch[len(batch)-1].Sequence}
			if err := ss.write(&veilv1.ServeRequest{Kind: &veilv1.ServeRequest_Ack_{Ack: ack}}); err != nil {
				return ss.end(err)
			}
		}
	}
}

// socketCarrier is a Serve stream on the serve socket: the version byte 0x01 each way, then
// frames of a 4-byte big-endian length and a ServeRequest / ServeResponse; the sidecar's last
// frame is `closed`, a google.rpc.Status.
type socketCarrier struct {
	conn        net.Conn
	in          *bufio.Reader
	sentVersion bool
	readVersion bool
	out         []byte
}

// The largest frame read from the sidecar.
const maxServeFrame = 256 << 20

// Send writes one request (callers serialise Sends).
func (c *socketCarrier) Send(r *veilv1.ServeRequest) error {
	c.out = c.out[:0]
	if !c.sentVersion {
		c.out = append(c.out, 1)
		c.sentVersion = true
	}
	start := len(c.out)
	c.out = append(c.out, 0, 0, 0, 0)
	var err error
	if c.out, err = (proto.MarshalOptions{}).MarshalAppend(c.out, r); err != nil {
		return err
	}
	binary.BigEndian.PutUint32(c.out[start:], uint32(len(c.out)-start-4))
	_, err = c.conn.Write(c.out)
	return err
}

// Recv reads the next response: io.EOF after a `closed` status with code OK, the status as an
// error after any other.
func (c *socketCarrier) Recv() (*veilv1.ServeResponse, error) {
	if !c.readVersion {
		version, err := c.in.ReadByte()
		if err != nil {
			return nil, c.lost(err)
		}
		if version != 1 {
			return nil, status.Errorf(codes.Unimplemented, "the sidecar speaks serve socket version %d", version)
		}
		c.readVersion = true
	}
	var header [4]byte
	if _, err := io.ReadFull(c.in, header[:]); err != nil {
		return nil, c.lost(err)
	}
	size := binary.BigEndian.Uint32(header[:])
	if size > maxServeFrame {
		return nil, status.Errorf(codes.Internal, "the sidecar sent a %d-byte frame", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c.in, body); err != nil {
		return nil, c.lost(err)
	}
	r := &veilv1.ServeResponse{}
	if err := proto.Unmarshal(body, r); err != nil {
		return nil, status.Errorf(codes.Internal, "the sidecar sent a frame that is not a ServeResponse: %v", err)
	}
	if closed := r.GetClosed(); closed != nil {
		if closed.Code == int32(codes.OK) {
			return nil, io.EOF
		}
		return nil, status.ErrorProto(closed)
	}
	return r, nil
}

func (c *socketCarrier) lost(err error) error {
	return status.Errorf(codes.Unavailable, "the serve socket closed without a status: %v", err)
}

// WithTimeout is context.WithTimeout on Background, for short calls.
func WithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
