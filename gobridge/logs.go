package gobridge

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// The core's log records wait here until Python drains them with Logs, so
// that Go never calls into Python. The buffer is bounded: when Python does
// not drain it, the oldest records are dropped and counted.
const maxLogs = 1000

var (
	logMu      sync.Mutex
	logLines   []string
	logDropped int
	logger     = slog.New(&bufferHandler{})
)

// bufferHandler formats records as "LEVEL<TAB>message key=value ...".
type bufferHandler struct{ attrs []slog.Attr }

func (h *bufferHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *bufferHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\t%s", r.Level, r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	logMu.Lock()
	defer logMu.Unlock()
	if len(logLines) >= maxLogs {
		logLines = logLines[1:]
		logDropped++
	}
	logLines = append(logLines, oneLine(b.String()))
	return nil
}

func (h *bufferHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &bufferHandler{attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *bufferHandler) WithGroup(string) slog.Handler { return h }

// logsWaiting reports whether records wait for Logs.
func logsWaiting() bool {
	logMu.Lock()
	defer logMu.Unlock()
	return len(logLines) > 0 || logDropped > 0
}

// Logs returns and clears the buffered records, one per line, as
// "LEVEL<TAB>message attrs".
func Logs() (s string, err error) {
	defer guard(&err)()
	logMu.Lock()
	defer logMu.Unlock()
	lines := logLines
	if logDropped > 0 {
		lines = append(lines, fmt.Sprintf("WARN\ttimely: %d log records dropped", logDropped))
	}
	logLines, logDropped = nil, 0
	return strings.Join(lines, "\n"), nil
}
