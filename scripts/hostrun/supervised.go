package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"example.com/grpc-metrics/scripts/internal/supervisor"
)

// supervised is the program under a supervisor (scripts/internal/supervisor),
// which holds its sockets: a new build takes over from the running process
// without a connection refused, under Delve too.
type supervised struct {
	signals chan os.Signal
	done    chan struct{}
	err     error // of Run, once done is closed
}

// supervise runs the program on sockets until it stops; see supervised.
func (c *runConfig) supervise(sockets []supervisor.Socket, log *zap.Logger) (*supervised, error) {
	dir, err := os.MkdirTemp("", "hostrun-")
	if err != nil {
		return nil, err
	}
	s := &supervisor.Supervisor{Log: log, StartTimeout: startTimeout}
	var closeLauncher func()
	if c.delve == "" {
		s.Launcher = &supervisor.Exec{Command: c.command, Sockets: sockets, Dir: dir, Env: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
	} else {
		l, err := net.Listen("tcp", c.delve)
		if err != nil {
			os.RemoveAll(dir) //nolint:errcheck // best effort
			return nil, fmt.Errorf("--delve %s: %w", c.delve, err)
		}
		front := supervisor.NewFront(l, true, log.Named("debuggers"))
		go front.Serve()
		d := &supervisor.Delve{Dlv: c.dlv, Command: c.command, Sockets: sockets, Dir: dir, Env: os.Environ(), Front: front, Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
		s.Launcher, s.Sequential, s.StartTimeout, closeLauncher = d, true, 0, d.Close
	}
	sv := &supervised{signals: make(chan os.Signal, 4), done: make(chan struct{})}
	go func() {
		sv.err = s.Run(sv.signals)
		if closeLauncher != nil {
			closeLauncher()
		}
		os.RemoveAll(dir) //nolint:errcheck // best effort
		close(sv.done)
	}()
	return sv, nil
}

// halt stops the program: SIGTERM, passed on by the supervisor, and a
// second one (every process, the draining ones too) if it has not stopped
// by the deadline.
func (sv *supervised) halt(deadline time.Time) {
	sv.signals <- syscall.SIGTERM
	select {
	case <-sv.done:
	case <-time.After(max(time.Until(deadline)-time.Second, haltTimeout)):
		sv.signals <- syscall.SIGTERM
		select {
		case <-sv.done:
		case <-time.After(time.Second):
			// The kernel stops what is left when hostrun exits (Linux).
		}
	}
}

// superviseOrLog runs the program, or logs why it could not (the next
// build tries again).
func (c *runConfig) superviseOrLog(sockets []supervisor.Socket, log *zap.Logger, logf func(string, ...any)) *supervised {
	sv, err := c.supervise(sockets, log)
	if err != nil {
		logf("could not run %s: %v", c.command[0], err)
	}
	return sv
}

// stamp tells one binary from the next.
type stamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (stamp, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, false
	}
	return stamp{fi.ModTime(), fi.Size()}, true
}

// consoleLogger writes the supervisor's lines as console lines, the
// programs' format in the dev build.
func consoleLogger(w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), zapcore.InfoLevel)).Named("hostrun")
}
