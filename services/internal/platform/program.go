package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"
)

// Exit codes of the programs.
const (
	exitFailed = 1 // the program ran and failed
	exitConfig = 2 // the configuration is invalid; nothing was started
)

// ConfigError is a configuration that cannot be used: nothing was started.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "invalid configuration: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ExitCode is the process's exit code for the error run returned: 0 for
// none and for a --help request, 2 for a configuration error, else 1.
func ExitCode(err error) int {
	var cfgErr *ConfigError
	switch {
	case err == nil || errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &cfgErr):
		return exitConfig
	}
	return exitFailed
}

// Program is what every program starts with: its logger, its tracing, its
// metrics registry (the Go runtime, process and build-info collectors).
type Program struct {
	Log      *zap.Logger
	Tracing  *Tracing
	Registry *prometheus.Registry
	signals  context.CancelFunc
}

// Start starts program: it loads cfg from the PREFIX_* environment variables
// (args may only ask for --help, which prints the variables to stdout and
// returns ErrHelp), builds the logger, routes grpc-go's own logs through it,
// sets up tracing from the OTEL_* variables and logs the configuration. The
// context it returns ends on the first SIGINT or SIGTERM; from then on the
// default handling is back, so a second signal ends the process at once. A
// configuration that cannot be used, printed to stderr, is a *ConfigError.
func Start(program, prefix string, cfg Config, args []string, stdout, stderr io.Writer) (context.Context, *Program, error) {
	fail := func(err error) (context.Context, *Program, error) {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return nil, nil, err
	}
	if err := LoadConfig(prefix, cfg, args, stdout); err != nil {
		if errors.Is(err, ErrHelp) {
			return nil, nil, err
		}
		return fail(&ConfigError{Err: err})
	}
	log, err := NewLogger(cfg.Logging())
	if err != nil {
		return fail(err)
	}
	log = log.With(zap.String("program", program))
	// grpc-go logs its connection events at info; they are noise unless we debug.
	grpcLog := log.Named("grpc")
	if lvl := zapcore.Level(cfg.Logging().Level); lvl > zapcore.DebugLevel && lvl < zapcore.WarnLevel {
		grpcLog = grpcLog.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	}
	grpclog.SetLoggerV2(zapgrpc.NewLogger(grpcLog))
	tracing, err := NewTracing(context.Background(), program, log)
	if err != nil {
		return fail(&ConfigError{Err: err})
	}
	log.Info("starting", zap.String("version", version.Version), zap.String("revision", version.Revision),
		zap.String("config", strings.TrimPrefix(fmt.Sprintf("%+v", cfg), "&")))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, func() {
		stop()
		log.Info("shutting down; a second signal ends the process at once", zap.NamedError("cause", context.Cause(ctx)))
	})
	return ctx, &Program{Log: log, Tracing: tracing, Registry: NewRegistry("echo_" + program), signals: stop}, nil
}

// Stop ends the program: it logs how it ended, exports the spans still
// queued and returns err, the error the program stopped with.
func (p *Program) Stop(err error) error {
	p.signals()
	if terr := p.Tracing.Shutdown(); terr != nil {
		p.Log.Warn("the last spans were not exported", zap.Error(terr))
	}
	if err != nil {
		p.Log.Error("stopped with an error", zap.Error(err))
	} else {
		p.Log.Info("stopped")
	}
	p.Log.Sync() //nolint:errcheck // stderr cannot be synced on some systems; nothing to do about it
	return err
}
