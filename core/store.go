package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// ErrURL wraps every malformed or unsupported Redis URL.
var ErrURL = errors.New("timely: bad redis url")

// PoolSize is the number of pooled connections a Store opened by Open keeps
// to each Redis server, besides the one Pub/Sub connection that all its
// limiters share. Waiters never hold a connection, so this bounds the
// connections of a process however many waiters it has.
const PoolSize = 4

// StoreOptions tunes a Store. The zero value is ready to use.
type StoreOptions struct {
	// Logger receives the core's records: debug for retries, warning for
	// lost leases and swallowed errors. Nil discards them.
	Logger *slog.Logger
}

// Store is the Redis that holds the state of limiters, with the Pub/Sub
// connection its limiters share. It is safe for concurrent use.
type Store struct {
	rdb   redis.UniversalClient
	log   *slog.Logger
	hub   *hub
	owned bool
	// deadlines: rdb ends a call at its context's deadline (go-redis's
	// ContextTimeoutEnabled), so a call can be bounded to a caller's
	// budget of a millisecond (see Semaphore.StartNow).
	deadlines bool
	// now is the client of the rounds run in callers' goroutines, one
	// connection that polls for its replies (see spinClient), or nil; it
	// serves one round at a time (nowMu), others use rdb.
	now   *redis.Client
	nowMu sync.Mutex
	// nowOff is when rounds may run in callers' goroutines again (Unix
	// ns), after nowFails such rounds in a row got no answer within their
	// budget: a distant, busy or unreachable Redis is left to the
	// dispatchers instead of costing every acquisition a failed call, a
	// new connection and a look-up.
	nowOff   atomic.Int64
	nowFails atomic.Int32
}

// nowBackoff is how long rounds stay with the dispatchers after the first
// round in a caller's goroutine that got no answer in time; it doubles
// with each failure in a row, up to nowBackoffMax.
const (
	nowBackoff    = 100 * time.Millisecond
	nowBackoffMax = 5 * time.Second
)

// nowAllowed tells whether a round may run in a caller's goroutine.
func (s *Store) nowAllowed() bool {
	return time.Now().UnixNano() >= s.nowOff.Load()
}

// nowDone records the outcome of a round run in a caller's goroutine.
func (s *Store) nowDone(answered bool) {
	if answered {
		s.nowFails.Store(0)
		return
	}
	n := s.nowFails.Add(1)
	d := min(nowBackoff<<min(n-1, 10), nowBackoffMax)
	s.nowOff.Store(time.Now().Add(d).UnixNano())
}

// nowFast is the longest a dispatcher's round may take to show that
// Redis answers quickly again: half of a caller's usual budget.
const nowFast = 500 * time.Microsecond

// dispatcherDone records how long a dispatcher's round took. A quick
// answer ends a pause of the rounds in callers' goroutines at once, so
// that a burst that once kept Redis busy does not slow the calls that
// come after it for seconds; a slow or failing Redis never ends one.
func (s *Store) dispatcherDone(took time.Duration, answered bool) {
	if answered && took < nowFast && s.nowFails.Load() != 0 {
		s.nowFails.Store(0)
		s.nowOff.Store(0)
	}
}

// NewStore wraps a go-redis client. The caller keeps ownership of rdb:
// Close leaves it open.
func NewStore(rdb redis.UniversalClient, opts StoreOptions) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{rdb: rdb, log: log, hub: newHub(rdb, log), deadlines: honoursDeadlines(rdb)}
}

// honoursDeadlines reports whether rdb bounds its calls by their
// context's deadline. Clients made by Open do.
func honoursDeadlines(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// Open connects to the Redis named by rawURL, in one of the forms
//
//	redis://[user:password@]host:port[/db]
//	rediss://...                              (TLS)
//	unix:///path/to/redis.sock[?db=N]
//	redis+cluster://[user:password@]host:port[,host:port...]
//	redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]
//	memory://[name]                           (embedded, this process only)
//
// rediss+cluster:// and rediss+sentinel:// are the cluster and Sentinel
// forms over TLS. The query may hold go-redis's options for the form
// (dial_timeout, read_timeout, pool_size, skip_verify, ...; see
// redis.ParseURL, redis.ParseClusterURL and redis.ParseFailoverURL), and,
// with TLS, ParamCACerts, ParamCertFile and ParamKeyFile. Without
// ParamCACerts the server is verified against the system's CA store,
// which honours SSL_CERT_FILE and SSL_CERT_DIR as Go reads them on the
// first TLS connection of the process. The user and password of a
// Sentinel URL are those of the master; the sentinels get none.
//
// It does no network I/O: connections are made on first use. TLS files
// named in the URL are read at once. Errors wrap ErrURL and never include
// the password.
func Open(rawURL string, opts StoreOptions) (*Store, error) {
	rdb, now, err := newClient(rawURL)
	if err != nil {
		return nil, err
	}
	s := NewStore(rdb, opts)
	s.owned = true
	s.now = now
	return s, nil
}

// Client returns the go-redis client the Store uses.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Close ends the Pub/Sub connection and, for a Store made by Open, the
// client. Limiters using the Store must be closed first.
func (s *Store) Close() error {
	err := s.hub.close()
	if s.owned {
		err = errors.Join(err, s.rdb.Close())
	}
	if s.now != nil {
		err = errors.Join(err, s.now.Close())
	}
	return err
}

// The embedded servers of memory:// URLs, one per URL, shared by every
// Store of the process that names it.
var (
	memoryMu      sync.Mutex
	memoryServers = map[string]*miniredis.Miniredis{}
)

// newMemoryClient serves memory:// from a miniredis in this process. Its
// TTLs only run when its clock is moved, so a goroutine moves it in step
// with real time, keeping TTLs and TIME on the same clock.
func newMemoryClient(u *url.URL) (redis.UniversalClient, *redis.Client, error) {
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return nil, nil, fmt.Errorf("%w: %q: memory:// takes only a name, as memory://name",
			ErrURL, u.Redacted())
	}
	memoryMu.Lock()
	defer memoryMu.Unlock()
	m := memoryServers[u.Host]
	if m == nil {
		m = miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("%w: start embedded redis: %w", ErrConnection, err)
		}
		go advance(m)
		memoryServers[u.Host] = m
	}
	o := &redis.Options{Addr: m.Addr(), PoolSize: PoolSize, ContextTimeoutEnabled: true}
	now := spinClient(o) // before NewClient fills in o's dialer
	return redis.NewClient(o), now, nil
}

func advance(m *miniredis.Miniredis) {
	last := time.Now()
	for range time.Tick(20 * time.Millisecond) {
		now := time.Now()
		m.FastForward(now.Sub(last))
		last = now
	}
}

// background is the context of the dispatchers' own Redis calls; each
// call gets a deadline of its own.
var background = context.Background()
