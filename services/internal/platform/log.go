package platform

import (
	"context"
	"fmt"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
)

// LogFormat is the encoding of log lines: json or console.
type LogFormat string

// Log formats.
const (
	LogJSON    LogFormat = "json"
	LogConsole LogFormat = "console"
)

// Decode lets envconfig reject an unknown format with a clear reason.
func (f *LogFormat) Decode(s string) error {
	switch LogFormat(s) {
	case LogJSON, LogConsole:
		*f = LogFormat(s)
		return nil
	}
	return fmt.Errorf("unknown log format (use %s or %s)", LogJSON, LogConsole)
}

// LogLevel is the minimum level logged: debug, info, warn or error.
type LogLevel zapcore.Level

// Decode lets envconfig reject an unknown level with a clear reason.
func (l *LogLevel) Decode(s string) error {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(s)); err != nil || s == "" || lvl > zapcore.ErrorLevel {
		return fmt.Errorf("unknown log level (use debug, info, warn or error)")
	}
	*l = LogLevel(lvl)
	return nil
}

// String returns the level's name.
func (l LogLevel) String() string { return zapcore.Level(l).String() }

// LogConfig selects the logger's level and encoding.
type LogConfig struct {
	Level  LogLevel  `envconfig:"LEVEL" default:"info" desc:"minimum log level: debug, info, warn or error"`
	Format LogFormat `envconfig:"FORMAT" default:"json" desc:"log encoding: json (one object a line) or console (for people)"`
}

// NewLogger builds the program's logger: JSON or console lines on stderr,
// sampled so that a burst of identical messages (a failing call loop) cannot
// flood the output.
func NewLogger(cfg LogConfig) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zapcore.Level(cfg.Level))
	zc.Encoding = string(cfg.Format)
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	if cfg.Format == LogConsole {
		// One line a message: the stack of an error would follow on lines
		// of its own (JSON keeps it in a field).
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		zc.DisableStacktrace = true
	}
	log, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	return log, nil
}

// InterceptorLogger adapts a zap logger to go-grpc-middleware's logging
// interceptors.
func InterceptorLogger(log *zap.Logger) logging.Logger {
	log = log.WithOptions(zap.AddCallerSkip(1))
	return logging.LoggerFunc(func(_ context.Context, lvl logging.Level, msg string, fields ...any) {
		zl := zapLevel(lvl)
		ce := log.Check(zl, msg)
		if ce == nil {
			return
		}
		zf := make([]zap.Field, 0, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			key, ok := fields[i].(string)
			if !ok {
				key = fmt.Sprint(fields[i])
			}
			zf = append(zf, zap.Any(key, fields[i+1]))
		}
		ce.Write(zf...)
	})
}

func zapLevel(lvl logging.Level) zapcore.Level {
	switch lvl {
	case logging.LevelDebug:
		return zapcore.DebugLevel
	case logging.LevelInfo:
		return zapcore.InfoLevel
	case logging.LevelWarn:
		return zapcore.WarnLevel
	default:
		return zapcore.ErrorLevel
	}
}

// RPCLogOptions logs every finished call at debug level with its trace and
// span ids, method, code and duration.
func RPCLogOptions() []logging.Option {
	return []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(codes.Code) logging.Level { return logging.LevelDebug }),
		logging.WithDurationField(logging.DurationToDurationField),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			sc, ok := callSpan(ctx)
			if !ok {
				return nil
			}
			return logging.Fields{TraceIDKey, sc.TraceID().String(), SpanIDKey, sc.SpanID().String()}
		}),
	}
}
