//go:build e2e

package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

const protoFile = "proto/foo.proto"

// The line of foo.proto after which the compatible saves add a field.
const nameField = "string name = 1;"

// TestProtoLoop: the wire contract in the loop, under a real Tilt, the
// client calling 60 times a second and a terminal opening a new connection
// to the forwards every 100ms. 5 Go edits of the server are timed as a
// person sees them, then 5 saves of proto/foo.proto that each add a field
// to EchoRequest, timed from the save until gRPC reflection through
// localhost:20000 describes the new field: the proto resource regenerates,
// both programs are live-updated, and nothing fails. Then three breaking
// saves (a renumbered field, a renamed package, a removed method) and one
// that lint refuses: each turns the proto resource red within 5s with the
// reason in its log, nothing is generated, compiled or live-updated, and
// the seed's own call, encoded by hand, is answered.
func TestProtoLoop(t *testing.T) {
	s := startTilt(t, 1, 60)
	defer s.RestoreServer(t)
	original, err := os.ReadFile(filepath.Join(s.Dir, protoFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(original, []byte(nameField)) {
		t.Fatalf("%s has no line %q", protoFile, nameField)
	}
	defer s.restoreProto(t, original)

	// The Go edits and the proto saves alike with the terminal polling the
	// forwards (each forwarded connection costs the cluster CPU).
	poll, stop := s.PollForwards(t, 9000, 9001)
	logBefore := len(s.Proc.Output())
	goLoop := tiltsession.Summarize(s.EditN(t, "server", 5))
	_, failed0 := s.Calls.Read(t)
	var user, generate []time.Duration
	content := original
	for i := 1; i <= 5; i++ {
		field := fmt.Sprintf("extra_%d", i)
		content = bytes.Replace(content, []byte(nameField), fmt.Appendf(nil, "%s\n   string %s = %d;", nameField, field, i+1), 1)
		began := time.Now()
		rev := s.CommitAndWrite(t, protoFile, content)
		user = append(user, s.waitDescribed(t, field, began))
		s.WaitForRevision(t, "server", rev, began)
		s.WaitForRevision(t, "client", rev, began)
		if b, ok := s.BuildAfter(t, "proto", began); ok {
			generate = append(generate, b.Finish.Sub(b.Start))
		}
		t.Logf("proto save %d: reflection through localhost:20000 describes %s %.2fs after the save; %s", i, field, user[len(user)-1].Seconds(), s.timeline(t, began))
		time.Sleep(tiltsession.SettleTime)
	}
	stop()
	_, failed1 := s.Calls.Read(t)
	if n := poll.Failed(); n > 0 || poll.OK() == 0 {
		t.Errorf("%d of %d connections through the forwards failed across the Go edits and the proto saves, want 0:\n%s", n, n+poll.OK(), strings.Join(poll.Failures(), "\n"))
	}
	if failed1 != failed0 {
		t.Errorf("%v in-cluster client calls failed across the proto saves, want 0", failed1-failed0)
	}
	for _, line := range s.ForwardErrors(logBefore) {
		t.Errorf("Tilt's log: %s", line)
	}
	t.Logf("5 compatible saves of %s, each answered through localhost:20000 by reflection with its new field: p50 %.2fs, max %.2fs (the proto resource p50 %.2fs); 5 Go edits of the server: p50 %.2fs; difference %+.2fs; %d connections through the forwards ok, 0 failed",
		protoFile, tiltsession.Median(user).Seconds(), slices.Max(user).Seconds(), tiltsession.Median(generate).Seconds(), goLoop.UserP50.Seconds(),
		(tiltsession.Median(user) - goLoop.UserP50).Seconds(), poll.OK())

	for _, tt := range []struct {
		what, old, new, says string
	}{
		{"a renumbered field", nameField, "string name = 7;", `Previously present field "1" with name "name" on message "EchoRequest" was deleted`},
		{"a renamed package", "package foo;", "package bar;", `Previously present package "foo" was deleted`},
		{"a removed method", "rpc echo(EchoRequest) returns (EchoReply);", "", `Previously present RPC "echo" on service "Foo" was deleted`},
		{"a message lint refuses", "message EchoReply {", "message bad_name {}\n\nmessage EchoReply {", `Message name "bad_name" should be PascalCase`},
	} {
		s.refusedSave(t, tt.what, bytes.Replace(content, []byte(tt.old), []byte(tt.new), 1), tt.says)
	}
}

// timeline is when each build of the loop ran, from began: the proto
// resource, both compiles and both live updates.
func (s *session) timeline(t testing.TB, began time.Time) string {
	t.Helper()
	var parts []string
	for _, name := range []string{"proto", "server-compile", "client-compile", "server", "client"} {
		if b, ok := s.BuildAfter(t, name, began); ok {
			parts = append(parts, fmt.Sprintf("%s %.2f-%.2fs", name, b.Start.Sub(began).Seconds(), b.Finish.Sub(began).Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// waitDescribed waits until gRPC reflection through localhost:20000
// describes field in foo.EchoRequest, asking every 50ms from began on, and
// returns the time since began.
func (s *session) waitDescribed(t testing.TB, field string, began time.Time) time.Duration {
	t.Helper()
	for {
		fields, err := s.describe("foo.EchoRequest")
		if slices.Contains(fields, field) {
			return time.Since(began)
		}
		if time.Since(began) > tiltsession.EditTimeout {
			t.Fatalf("reflection through %s: foo.EchoRequest has no field %s within %v (fields %v, %v)", s.Target.Local(20000), field, tiltsession.EditTimeout, fields, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describe returns the fields of message, as the server's gRPC reflection
// describes it through localhost:20000 (grpcurl describe does the same).
func (s *session) describe(message string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := grpc.NewClient(s.Target.Local(20000), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: message}}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	files := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
	for _, raw := range files {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			return nil, err
		}
		for _, m := range fd.GetMessageType() {
			if fd.GetPackage()+"."+m.GetName() != message {
				continue
			}
			var names []string
			for _, f := range m.GetField() {
				names = append(names, f.GetName())
			}
			return names, nil
		}
	}
	return nil, fmt.Errorf("%s not in the %d files reflection sent", message, len(files))
}

// refusedSave saves content as proto/foo.proto without committing it, as a
// person does, and checks that the proto resource turns red within 5s with
// says in Tilt's log, and that for a few seconds more nothing is compiled
// or live-updated, proto/foopb is unchanged, and the seed's own call is
// answered through localhost:20000. Then it saves the previous content
// back, which passes.
func (s *session) refusedSave(t *testing.T, what string, content []byte, says string) {
	t.Helper()
	path := filepath.Join(s.Dir, protoFile)
	previous, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(previous, content) {
		t.Fatalf("%s: the save changes nothing", what)
	}
	generated := s.generated(t)
	logBefore := len(s.Proc.Output())
	began := time.Now()
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	var red time.Duration
	for {
		if b, ok := s.BuildAfter(t, "proto", began); ok {
			if b.Error == "" {
				t.Fatalf("%s: the proto resource passed:\n%s", what, s.Proc.Output()[logBefore:])
			}
			red = b.Finish.Sub(began)
			break
		}
		if time.Since(began) > tiltsession.EditTimeout {
			t.Fatalf("%s: the proto resource did not run within %v", what, tiltsession.EditTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if red > 5*time.Second {
		t.Errorf("%s: the proto resource turned red %.2fs after the save, want within 5s", what, red.Seconds())
	}
	if log := s.Proc.Output()[logBefore:]; !strings.Contains(log, says) {
		t.Errorf("%s: Tilt's log does not say %q:\n%s", what, says, log)
	}
	time.Sleep(3 * time.Second) // what a regeneration would have started by now
	for _, name := range []string{"server-compile", "client-compile", "server", "client"} {
		if b, ok := s.BuildAfter(t, name, began); ok {
			t.Errorf("%s: %s built at %s after the refused save", what, name, b.Start.Sub(began))
		}
	}
	if !maps.Equal(generated, s.generated(t)) {
		t.Errorf("%s: proto/foopb changed after the refused save", what)
	}
	if got, err := s.seedCall("seed"); err != nil || !strings.HasPrefix(got, "seed") {
		t.Errorf("%s: the seed's call through %s: %q, %v", what, s.Target.Local(20000), got, err)
	}
	t.Logf("%s: proto red %.2fs after the save, its log says %q; nothing generated, compiled or live-updated; the seed's call answered", what, red.Seconds(), says)

	back := time.Now()
	if err := os.WriteFile(path, previous, 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		if b, ok := s.BuildAfter(t, "proto", back); ok {
			if b.Error != "" {
				t.Fatalf("%s, saved back: the proto resource is still red: %s", what, b.Error)
			}
			return
		}
		if time.Since(back) > tiltsession.EditTimeout {
			t.Fatalf("%s, saved back: the proto resource did not run within %v", what, tiltsession.EditTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// generated is the content of each file of proto/foopb.
func (s *session) generated(t testing.TB) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.Dir, "proto", "foopb", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("proto/foopb: %v, %d files", err, len(files))
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = string(b)
	}
	return out
}

// seedCall is the original example's call, encoded by hand from the seed's
// contract (/foo.Foo/echo, EchoRequest.name = 1, EchoReply.message = 1),
// not by the generated code the saves change.
func (s *session) seedCall(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := grpc.NewClient(s.Target.Local(20000), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	req := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), name)
	var reply []byte
	if err := conn.Invoke(ctx, "/foo.Foo/echo", &req, &reply, grpc.ForceCodec(rawCodec{})); err != nil {
		return "", err
	}
	for len(reply) > 0 {
		num, typ, n := protowire.ConsumeTag(reply)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		reply = reply[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeString(reply)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			return v, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, reply)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		reply = reply[n:]
	}
	return "", errors.New("the reply has no field 1")
}

// rawCodec sends and receives a message's bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = bytes.Clone(data)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// restoreProto makes foo.proto the one the session started with again (a
// commit, so the branch's base moves with it) and waits until reflection
// no longer describes the fields the saves added.
func (s *session) restoreProto(t testing.TB, original []byte) {
	t.Helper()
	current, err := os.ReadFile(filepath.Join(s.Dir, protoFile))
	if err != nil || bytes.Equal(current, original) || t.Failed() {
		return
	}
	began := time.Now()
	rev := s.CommitAndWrite(t, protoFile, original)
	s.WaitForRevision(t, "server", rev, began)
	s.WaitForRevision(t, "client", rev, began)
}
