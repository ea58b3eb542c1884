// Package tests drives timely's Go core through its exported API, against
// the embedded miniredis and against real redis-server processes that the
// tests start on free ports.
package tests

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"timely/core"
)

// redisServer is a redis-server process owned by one test.
type redisServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// startRedis starts a redis-server on a free port and stops it when the
// test ends. A missing redis-server fails the test: these tests are the
// point, and skipping them would pass without checking anything.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	s := &redisServer{t: t, port: freePort(t)}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) start() {
	s.t.Helper()
	bin := os.Getenv("TIMELY_REDIS_SERVER")
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		s.t.Fatalf("redis-server not found (%v); `make test` installs it", err)
	}
	s.cmd = exec.Command(path, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.t.TempDir())
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.addr()})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on port %d did not answer", s.port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *redisServer) url() string { return "redis://" + s.addr() }

func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// backend is one kind of Redis the core runs on.
type backend struct {
	name string
	open func(t *testing.T) *core.Store
}

// backends returns the Redis kinds every behaviour is checked on.
func backends() []backend {
	return []backend{
		{"miniredis", func(t *testing.T) *core.Store {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			st := core.NewStore(rdb, core.StoreOptions{})
			t.Cleanup(func() { st.Close() })
			return st
		}},
		{"redis-server", func(t *testing.T) *core.Store {
			srv := startRedis(t)
			st, err := core.Open(srv.url(), core.StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
	}
}

// eachBackend runs f as a subtest on every backend.
func eachBackend(t *testing.T, f func(t *testing.T, st *core.Store)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

var nameSeq int

// uniqueName returns a limiter name no other test uses.
func uniqueName(t *testing.T) string {
	nameSeq++
	return fmt.Sprintf("%s-%d", filepath.Base(t.Name()), nameSeq)
}
