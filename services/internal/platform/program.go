package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
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

	given          map[string][]net.Listener // its sockets, when it was given them (activation.go)
	successorWaits bool                      // they came from a debugger's supervisor
	hosts          []string                  // to listen on; none: every interface
}

// Start starts program: it loads cfg from the PREFIX_* environment variables
// (args may only ask for --help, which prints the variables to stdout and
// returns ErrHelp), takes the listening sockets it was given, if any
// (activation.go), builds the logger, routes grpc-go's own logs through it,
// sets up tracing from the OTEL_* variables and logs the configuration. The
// context it returns ends on the first SIGINT or SIGTERM; from then on the
// default handling is back, so a second signal ends the process at once. A
// program given its sockets shares them, and its context also ends on
// SIGHUP, with the cause ErrHandedOver: another process accepts on them. A
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
	given, bySocket, err := givenListeners()
	if err != nil {
		return fail(err)
	}
	p := &Program{given: given, successorWaits: bySocket, hosts: cfg.Hosts()}
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
	log.Info("starting", zap.String("event", "starting"), zap.String("version", version.Version), zap.String("revision", version.Revision),
		zap.String("config", strings.TrimPrefix(fmt.Sprintf("%+v", cfg), "&")), zap.Bool("given_sockets", given != nil))
	p.Log, p.Tracing, p.Registry = log, tracing, NewRegistry("echo_"+program)
	ctx, stop := context.WithCancelCause(context.Background())
	p.signals = onSignal(stop, log, given != nil)
	return ctx, p, nil
}

// onSignal ends the context of stop on the first SIGINT or SIGTERM, and,
// when the program shares its sockets, on SIGHUP; from then on signals have
// their default effect. It returns the function that stops listening for
// them.
func onSignal(stop context.CancelCauseFunc, log *zap.Logger, shared bool) func() {
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if shared {
		sigs = append(sigs, syscall.SIGHUP)
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, sigs...)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-c:
			signal.Stop(c)
			if sig == syscall.SIGHUP {
				log.Info("handing over: a new process serves on the sockets; finishing the calls in progress", zap.String("event", "retiring"))
				stop(ErrHandedOver)
				return
			}
			log.Info("shutting down; a second signal ends the process at once", zap.Stringer("signal", sig))
			stop(fmt.Errorf("%v signal received", sig))
		case <-done:
		}
	}()
	return sync.OnceFunc(func() {
		signal.Stop(c)
		close(done)
	})
}

// Listeners opens the program's listeners, or takes those it was given.
func (p *Program) Listeners() *Listeners { return &Listeners{given: p.given, hosts: p.hosts} }

// SuccessorWaits reports whether the process that takes over the program's
// sockets starts only once this one has exited (a debugger runs one process
// at a time): then a hand-over's drain holds up the next build.
func (p *Program) SuccessorWaits() bool { return p.successorWaits }

// HandedOver reports whether ctx, a Start context, ended because a new
// process serves on the program's sockets.
func HandedOver(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrHandedOver) }

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
		p.Log.Info("stopped", zap.String("event", "stopped"))
	}
	p.Log.Sync() //nolint:errcheck // stderr cannot be synced on some systems; nothing to do about it
	return err
}
