package core

import (
	"context"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// spinFor is how long a read on the connection of the rounds run in a
// caller's goroutine (see Semaphore.StartNow) polls the socket before it
// sleeps in Go's network poller. That caller's thread waits for the reply
// anyway, and a sleeping thread costs a wake-up when the reply comes: on
// a virtual machine, often more than the whole round trip of a local
// Redis. Polling keeps the thread awake for about one round trip of a
// local Redis; longer polls (150 us was tried) made sequential cycles a
// little quicker, and cost other processes on a small machine the CPU
// they needed (hand-offs between two processes got later).
const spinFor = 100 * time.Microsecond

// spinConn is a TCP or Unix connection whose reads poll the socket for up
// to spinFor before waiting in the network poller.
type spinConn struct {
	net.Conn
	raw syscall.RawConn
}

// Read polls for data for up to spinFor, then waits as any read does;
// deadlines hold as on the wrapped connection.
func (c *spinConn) Read(b []byte) (int, error) {
	var n int
	var rerr error
	polled := false
	var until time.Time
	err := c.raw.Read(func(fd uintptr) bool {
		if polled {
			// Woken by the poller: one plain read.
			n, rerr = syscall.Read(int(fd), b)
			return rerr != syscall.EAGAIN
		}
		polled = true
		until = time.Now().Add(spinFor)
		for {
			n, rerr = syscall.Read(int(fd), b)
			if rerr != syscall.EAGAIN || time.Now().After(until) {
				return rerr != syscall.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(),
			Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	if rerr != nil {
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(),
			Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// spinClient returns a client of one connection, like one made with o
// but reading through spinConn, for the rounds of StartNow; nil when o
// uses TLS or a dialer of its own, which spinConn cannot wrap.
func spinClient(o *redis.Options) *redis.Client {
	if o.TLSConfig != nil || o.Dialer != nil {
		return nil
	}
	c := *o
	c.PoolSize, c.MinIdleConns, c.MaxIdleConns = 1, 0, 1
	plain := redis.NewDialer(&c)
	c.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := plain(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc, ok := conn.(syscall.Conn)
		if !ok {
			return conn, nil
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return conn, nil
		}
		return &spinConn{Conn: conn, raw: raw}, nil
	}
	return redis.NewClient(&c)
}
