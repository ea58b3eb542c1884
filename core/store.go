package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
}

// NewStore wraps a go-redis client. The caller keeps ownership of rdb:
// Close leaves it open.
func NewStore(rdb redis.UniversalClient, opts StoreOptions) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{rdb: rdb, log: log, hub: newHub(rdb, log)}
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
// It does no I/O: connections are made on first use. Errors wrap ErrURL and
// never include the password.
func Open(rawURL string, opts StoreOptions) (*Store, error) {
	rdb, err := newClient(rawURL)
	if err != nil {
		return nil, err
	}
	s := NewStore(rdb, opts)
	s.owned = true
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
	return err
}

func newClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %q cannot be parsed", ErrURL, redact(rawURL))
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %s", ErrURL, u.Redacted(),
				strings.TrimPrefix(err.Error(), "redis: "))
		}
		o.PoolSize = PoolSize
		return redis.NewClient(o), nil
	case "redis+cluster":
		return newClusterClient(u)
	case "redis+sentinel":
		return newSentinelClient(u)
	case "memory":
		return newMemoryClient(u)
	}
	return nil, fmt.Errorf("%w: %q: unsupported scheme %q", ErrURL, u.Redacted(), u.Scheme)
}

// hosts splits the host part of a multi-host URL and checks each address.
func hosts(u *url.URL) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(u.Host, ",") {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return nil, fmt.Errorf("%w: %q: address %q is not host:port", ErrURL, u.Redacted(), a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: %q: port %q is not in 1..65535", ErrURL, u.Redacted(), port)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

func credentials(u *url.URL) (user, password string) {
	if u.User == nil {
		return "", ""
	}
	password, _ = u.User.Password()
	return u.User.Username(), password
}

func newClusterClient(u *url.URL) (redis.UniversalClient, error) {
	addrs, err := hosts(u)
	if err != nil {
		return nil, err
	}
	user, password := credentials(u)
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: addrs, Username: user, Password: password, PoolSize: PoolSize,
	}), nil
}

func newSentinelClient(u *url.URL) (redis.UniversalClient, error) {
	addrs, err := hosts(u)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return nil, fmt.Errorf("%w: %q: the path must be /service_name[/db]", ErrURL, u.Redacted())
	}
	db := 0
	if len(parts) == 2 {
		if db, err = strconv.Atoi(parts[1]); err != nil || db < 0 {
			return nil, fmt.Errorf("%w: %q: db %q is not a number >= 0", ErrURL, u.Redacted(), parts[1])
		}
	}
	user, password := credentials(u)
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: parts[0], SentinelAddrs: addrs, DB: db,
		Username: user, Password: password, PoolSize: PoolSize,
	}), nil
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
func newMemoryClient(u *url.URL) (redis.UniversalClient, error) {
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%w: %q: memory:// takes only a name, as memory://name",
			ErrURL, u.Redacted())
	}
	memoryMu.Lock()
	defer memoryMu.Unlock()
	m := memoryServers[u.Host]
	if m == nil {
		m = miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("%w: start embedded redis: %w", ErrConnection, err)
		}
		go advance(m)
		memoryServers[u.Host] = m
	}
	return redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: PoolSize}), nil
}

func advance(m *miniredis.Miniredis) {
	last := time.Now()
	for range time.Tick(20 * time.Millisecond) {
		now := time.Now()
		m.FastForward(now.Sub(last))
		last = now
	}
}

// redact hides the password of a URL that url.Parse could not read.
func redact(raw string) string {
	at := strings.LastIndex(raw, "@")
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return raw
	}
	return raw[:scheme+3] + "xxxxx" + raw[at:]
}

// background is the context of the dispatchers' own Redis calls; each
// call gets a deadline of its own.
var background = context.Background()
