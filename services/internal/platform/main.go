package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/common/version"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"
)

// Exit codes of the programs.
const (
	ExitOK     = 0
	ExitFailed = 1 // the program ran and failed
	ExitConfig = 2 // the configuration is invalid; nothing was started
)

// Main is the whole of a program's main: it loads the configuration PREFIX_*
// from the environment, builds the logger, routes grpc-go's own logs through
// it and calls run with a context that ends on the first SIGINT or SIGTERM
// (a second one ends the process at once). It returns the process exit code.
func Main[C any, PC interface {
	*C
	Config
}](program, prefix string, args []string, stdout, stderr io.Writer, run func(context.Context, C, *zap.Logger) error) int {
	var cfg C
	if err := LoadConfig(prefix, PC(&cfg), args, stdout); err != nil {
		if errors.Is(err, ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: invalid configuration: %v\n", program, err)
		return ExitConfig
	}
	log, err := NewLogger(PC(&cfg).Logging())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return ExitFailed
	}
	defer log.Sync() //nolint:errcheck // stderr cannot be synced on some systems; nothing to do about it
	log = log.With(zap.String("program", program))

	// grpc-go logs its connection events at info; they are noise unless we debug.
	grpcLog := log.Named("grpc")
	if lvl := zapcore.Level(PC(&cfg).Logging().Level); lvl > zapcore.DebugLevel && lvl < zapcore.WarnLevel {
		grpcLog = grpcLog.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	}
	grpclog.SetLoggerV2(zapgrpc.NewLogger(grpcLog))

	log.Info("starting", zap.String("version", version.Version), zap.String("revision", version.Revision),
		zap.String("config", fmt.Sprintf("%+v", cfg)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case sig := <-sigs:
			// The first signal shuts down gracefully; restoring the default
			// disposition lets a second one end the process at once.
			signal.Stop(sigs)
			log.Info("shutting down; a second signal ends the process at once", zap.Stringer("signal", sig))
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("stopped with an error", zap.Error(err))
		return ExitFailed
	}
	log.Info("stopped")
	return ExitOK
}
