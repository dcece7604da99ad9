// Command supervisor holds a program's listening sockets and runs the
// program on them, a new process for each new binary (package
// scripts/internal/supervisor). It is PID 1 of the programs' containers in
// the Tilt dev build, where a live update writes the new binary and sends
// SIGHUP: no connection is refused while one process hands over to the
// next.
//
//	supervisor --listen NAME=HOST:PORT[,HOST:PORT...]... [--start-timeout D]
//	           [--delve HOST:PORT [--dlv FILE] [--delve-any-user]] -- PROGRAM [ARG...]
//
// Each --listen is a socket the program is given by NAME (LISTEN_FDNAMES),
// the program's name for that listener (grpc, metrics, debug). SIGHUP
// starts PROGRAM anew from its path and retires the process that served
// once the new one serves; SIGINT and SIGTERM stop the program; the
// supervisor exits with the program's status.
//
// With --delve, the program runs under one Delve server that outlives every
// process, and debuggers (VS Code, GoLand, dlv connect) attach at HOST:PORT:
// a new binary drains the old process, then Delve restarts the program on
// the same sockets, with the same breakpoints, and the debuggers stay
// attached.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"example.com/grpc-metrics/scripts/internal/supervisor"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// listenFlags collects repeated --listen values.
type listenFlags []string

func (l *listenFlags) String() string { return strings.Join(*l, " ") }

func (l *listenFlags) Set(v string) error {
	if _, _, err := supervisor.ParseListen(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// run runs the supervisor and returns its exit status.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("supervisor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listens listenFlags
	fs.Var(&listens, "listen", "NAME=HOST:PORT[,HOST:PORT...]: a socket the program is given by NAME (repeat)")
	startTimeout := fs.Duration("start-timeout", 10*time.Second, "how long a new process may take to serve before it is killed (not under Delve)")
	delve := fs.String("delve", "", "HOST:PORT: run the program under Delve; debuggers attach here")
	dlv := fs.String("dlv", "", "Delve's binary (default: dlv beside this one, else on the PATH)")
	anyUser := fs.Bool("delve-any-user", false, "let every user's debugger attach (in a pod, port-forwarded connections are the container runtime's user)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	command := fs.Args()
	if len(command) == 0 {
		fmt.Fprintln(stderr, "supervisor: no program to run: supervisor [flags] -- PROGRAM [ARG...]")
		return 2
	}

	// Caught from the start: as PID 1 they would otherwise be ignored.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)

	log := newLogger(stderr)
	defer log.Sync() //nolint:errcheck // stderr cannot be synced on some systems
	if err := supervise(log, listens, *startTimeout, *delve, *dlv, !*anyUser, command, signals); err != nil {
		log.Error("stopped", zap.Error(err))
		return exitCode(err)
	}
	return 0
}

func supervise(log *zap.Logger, listens []string, startTimeout time.Duration, delveAddr, dlv string, sameUser bool, command []string, signals <-chan os.Signal) error {
	dir, err := os.MkdirTemp("", "supervisor-")
	if err != nil {
		return fmt.Errorf("a directory of its own: %w", err)
	}
	defer os.RemoveAll(dir)
	var sockets []supervisor.Socket
	defer func() { supervisor.CloseSockets(sockets) }()
	var held []zap.Field
	for _, l := range listens {
		name, addrs, _ := supervisor.ParseListen(l)
		ss, err := supervisor.Listen(context.Background(), name, addrs)
		if err != nil {
			return err
		}
		sockets = append(sockets, ss...)
		as := make([]string, len(ss))
		for i, s := range ss {
			as[i] = s.Addr.String()
		}
		held = append(held, zap.String(name, strings.Join(as, ",")))
	}
	log.Info("holding the sockets", append(held, zap.String("event", "holding"))...)

	s := &supervisor.Supervisor{Log: log, StartTimeout: startTimeout}
	if delveAddr == "" {
		s.Launcher = &supervisor.Exec{Command: command, Sockets: sockets, Dir: dir, Env: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
		return s.Run(signals)
	}
	if dlv == "" {
		dlv = delveBinary()
	}
	l, err := net.Listen("tcp", delveAddr)
	if err != nil {
		return fmt.Errorf("--delve %s: %w", delveAddr, err)
	}
	front := supervisor.NewFront(l, sameUser, log.Named("debuggers"))
	go front.Serve()
	d := &supervisor.Delve{Dlv: dlv, Command: command, Sockets: sockets, Dir: dir, Env: os.Environ(), Front: front, Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
	defer d.Close()
	s.Launcher, s.Sequential, s.StartTimeout = d, true, 0
	return s.Run(signals)
}

// delveBinary is dlv beside this binary, where the dev image has it, or
// on the PATH.
func delveBinary() string {
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "dlv"); fileExists(p) {
			return p
		}
	}
	return "dlv"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// exitCode is the status the supervisor ends with: the program's own, or
// 1.
func exitCode(err error) int {
	var coded interface{ ExitCode() int }
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	case errors.As(err, &coded) && coded.ExitCode() > 0:
		return coded.ExitCode()
	}
	return 1
}

// newLogger writes console lines, as the programs do in the dev build.
func newLogger(w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), zapcore.InfoLevel)
	return zap.New(core).Named("supervisor")
}
