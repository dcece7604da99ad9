package main

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

const envPrefix = "SERVER"

// minMaxConnAge keeps SERVER_MAX_CONNECTION_AGE from turning into a
// reconnection storm.
const minMaxConnAge = time.Second

// Config is the server's configuration, read from SERVER_* variables.
type Config struct {
	GRPCPort        int           `envconfig:"GRPC_PORT" default:"20000" desc:"TCP port of the gRPC listener"`
	Reflection      bool          `envconfig:"REFLECTION" default:"true" desc:"serve gRPC server reflection (for grpcurl and ghz)"`
	MaxNameBytes    int           `envconfig:"MAX_NAME_BYTES" default:"1024" desc:"longest name accepted by echo, in bytes; longer gets INVALID_ARGUMENT"`
	MaxRecvMsgBytes int           `envconfig:"MAX_RECV_MSG_BYTES" default:"16384" desc:"largest request message accepted, in bytes; larger gets RESOURCE_EXHAUSTED"`
	MaxConnAge      time.Duration `envconfig:"MAX_CONNECTION_AGE" default:"1m" desc:"connections are closed gracefully after this long, so clients resolve the server's name again and spread over new pods"`
	ShutdownDelay   time.Duration `envconfig:"SHUTDOWN_DELAY" default:"0s" desc:"after SIGTERM, time spent NOT_SERVING before draining, so load balancers stop sending calls"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"10s" desc:"how long calls in progress may take to finish at shutdown before they are cancelled"`
	SlowCall        time.Duration `envconfig:"SLOW_CALL" default:"100ms" desc:"a successful call that takes this long or longer is logged (warn) with its trace id"`
	platform.Common
}

// Validate reports the first setting that is out of range.
func (c Config) Validate() error {
	if err := c.Common.Check(envPrefix, platform.NamedPort{Key: envPrefix + "_GRPC_PORT", Port: c.GRPCPort}); err != nil {
		return err
	}
	if c.MaxNameBytes < 1 {
		return &platform.FieldError{Key: envPrefix + "_MAX_NAME_BYTES", Value: c.MaxNameBytes, Reason: "must be at least 1"}
	}
	if need := requestBytes(c.MaxNameBytes); c.MaxRecvMsgBytes < need {
		return &platform.FieldError{Key: envPrefix + "_MAX_RECV_MSG_BYTES", Value: c.MaxRecvMsgBytes,
			Reason: fmt.Sprintf("must be at least %d, the wire size of a request whose name is %s_MAX_NAME_BYTES (%d) long", need, envPrefix, c.MaxNameBytes)}
	}
	if c.MaxConnAge < minMaxConnAge {
		return &platform.FieldError{Key: envPrefix + "_MAX_CONNECTION_AGE", Value: c.MaxConnAge, Reason: "must be at least " + minMaxConnAge.String()}
	}
	if c.ShutdownDelay < 0 {
		return &platform.FieldError{Key: envPrefix + "_SHUTDOWN_DELAY", Value: c.ShutdownDelay, Reason: "must not be negative"}
	}
	if c.SlowCall <= 0 {
		return &platform.FieldError{Key: envPrefix + "_SLOW_CALL", Value: c.SlowCall, Reason: "must be positive"}
	}
	if c.ShutdownTimeout <= 0 {
		return &platform.FieldError{Key: envPrefix + "_SHUTDOWN_TIMEOUT", Value: c.ShutdownTimeout, Reason: "must be positive"}
	}
	return nil
}

// requestBytes is the wire size of an EchoRequest whose name is n bytes long:
// the name field's tag, its length prefix and the bytes.
func requestBytes(n int) int {
	field := (&foopb.EchoRequest{}).ProtoReflect().Descriptor().Fields().ByName("name").Number()
	return protowire.SizeTag(field) + protowire.SizeBytes(n)
}
