package gobridge

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// notifier tells one asyncio event loop that operations completed: it
// queues their lines and makes an eventfd readable, once however many
// complete before the loop collects them.
type notifier struct {
	fd int

	mu        sync.Mutex
	lines     []string
	signalled bool
}

const (
	efdCloexec  = 0x80000
	efdNonblock = 0x800
)

// NewNotifier creates a notifier and returns its id. Watch NotifierFD(id)
// for readability, then read it and call Collect(id).
func NewNotifier() (id int64, err error) {
	defer guard(&err)()
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, efdCloexec|efdNonblock, 0)
	if errno != 0 {
		return 0, fmt.Errorf("[internal] eventfd: %v", errno)
	}
	mu.Lock()
	defer mu.Unlock()
	id = newID()
	notifiers[id] = &notifier{fd: int(fd)}
	return id, nil
}

// NotifierFD returns the file descriptor of notifier id.
func NotifierFD(id int64) (fd int64, err error) {
	defer guard(&err)()
	n, err := notifierOf(id)
	if err != nil {
		return 0, err
	}
	return int64(n.fd), nil
}

// Collect returns the lines of the operations completed since the last
// call, one per line: "<op> ok" or "<op> <kind> <message>", and last the
// line "logs" when log records wait for Logs (so that a wake-up costs one
// call into Go, not two). Call it after reading the descriptor, so that a
// completion racing with it signals again.
func Collect(id int64) (s string, err error) {
	defer guard(&err)()
	n, err := notifierOf(id)
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	lines := n.lines
	n.lines, n.signalled = nil, false
	n.mu.Unlock()
	if logsWaiting() {
		lines = append(lines, "logs")
	}
	return strings.Join(lines, "\n"), nil
}

// CloseNotifier closes notifier id and its descriptor. Operations that
// complete afterwards are only reachable through Wait.
func CloseNotifier(id int64) (err error) {
	defer guard(&err)()
	mu.Lock()
	n := notifiers[id]
	delete(notifiers, id)
	mu.Unlock()
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	fd := n.fd
	n.fd = -1
	return syscall.Close(fd)
}

func notifierOf(id int64) (*notifier, error) {
	mu.Lock()
	defer mu.Unlock()
	n := notifiers[id]
	if n == nil {
		return nil, fmt.Errorf("[closed] no notifier %d", id)
	}
	return n, nil
}

// push queues a completion line and signals the descriptor if it is not
// signalled already.
func (n *notifier) push(line string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, line)
	if n.signalled || n.fd < 0 {
		return
	}
	n.signalled = true
	one := uint64(1)
	b := (*[8]byte)(unsafe.Pointer(&one))[:]
	_, _ = syscall.Write(n.fd, b) // EAGAIN only if already readable
}
