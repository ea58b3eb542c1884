package core

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The query parameters that timely reads itself, before the rest of the
// URL goes to go-redis's parsers. They name the files of a TLS connection
// and are accepted only by the TLS schemes.
const (
	// ParamCACerts names a PEM file of CA certificates. When it is given,
	// the server's certificate must chain to one of them, instead of to
	// the system's CA store (which honours SSL_CERT_FILE and
	// SSL_CERT_DIR).
	ParamCACerts = "ssl_ca_certs"
	// ParamCertFile names a PEM file holding the client's certificate,
	// for servers that ask for one (tls-auth-clients); ParamKeyFile must
	// name its private key.
	ParamCertFile = "ssl_certfile"
	// ParamKeyFile names the PEM file of the client certificate's key.
	ParamKeyFile = "ssl_keyfile"
)

// newClient makes the client for one of the URL forms that Open accepts,
// and for a single server without TLS (memory:// too) the client of the
// rounds run in callers' goroutines (see spinClient). It does no network
// I/O; TLS files named in the URL are read here, so that a wrong path
// fails at once.
func newClient(rawURL string) (rdb redis.UniversalClient, now *redis.Client, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q cannot be parsed", ErrURL, redact(rawURL))
	}
	p := &urlParser{u: u, shown: redactURL(u)}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		return p.single()
	case "redis+cluster", "rediss+cluster":
		rdb, err = p.cluster()
	case "redis+sentinel", "rediss+sentinel":
		rdb, err = p.sentinel()
	case "memory":
		return newMemoryClient(u)
	default:
		err = p.fail("unsupported scheme %q; use redis, rediss, unix, "+
			"redis+cluster, redis+sentinel or memory", u.Scheme)
	}
	return rdb, nil, err
}

// urlParser carries the URL being read and its printable form.
type urlParser struct {
	u     *url.URL
	shown string // the URL without its password, for error messages
}

func (p *urlParser) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %q: %s", ErrURL, p.shown, fmt.Sprintf(format, args...))
}

// goRedisError rewords an error of go-redis's URL parsers as ours.
func (p *urlParser) goRedisError(err error) error {
	return p.fail("%s", strings.TrimPrefix(err.Error(), "redis: "))
}

// tlsScheme tells whether the URL asks for TLS.
func (p *urlParser) tlsScheme() bool { return strings.HasPrefix(p.u.Scheme, "rediss") }

// single reads redis://, rediss:// and unix:// with go-redis's ParseURL,
// once timely's own parameters are taken out. It also returns the client
// of StartNow's rounds (see spinClient), or nil.
func (p *urlParser) single() (redis.UniversalClient, *redis.Client, error) {
	q := p.u.Query()
	files, err := p.takeTLSFiles(q)
	if err != nil {
		return nil, nil, err
	}
	plain := *p.u
	plain.RawQuery = q.Encode()
	o, err := redis.ParseURL(plain.String())
	if err != nil {
		return nil, nil, p.goRedisError(err)
	}
	if err := p.applyTLSFiles(o.TLSConfig, files); err != nil {
		return nil, nil, err
	}
	if o.PoolSize == 0 {
		o.PoolSize = PoolSize
	}
	o.ContextTimeoutEnabled = true
	now := spinClient(o) // before NewClient fills in o's dialer
	return redis.NewClient(o), now, nil
}

// cluster reads redis+cluster://[user:password@]host:port[,host:port...]
// by handing go-redis's ParseClusterURL the first address as the host and
// the others as addr parameters. A cluster has only db 0, so the URL has
// no path.
func (p *urlParser) cluster() (redis.UniversalClient, error) {
	addrs, err := p.hosts()
	if err != nil {
		return nil, err
	}
	if strings.Trim(p.u.Path, "/") != "" {
		return nil, p.fail("a cluster URL has no path (a cluster has only db 0)")
	}
	q := p.u.Query()
	if err := p.refuse(q, "addr", "the addresses go in the host part, separated by commas"); err != nil {
		return nil, err
	}
	files, err := p.takeTLSFiles(q)
	if err != nil {
		return nil, err
	}
	q["addr"] = addrs[1:]
	o, err := redis.ParseClusterURL(p.goRedisURL(addrs[0], "", q))
	if err != nil {
		return nil, p.goRedisError(err)
	}
	if o.TLSConfig != nil {
		o.TLSConfig.MinVersion = tls.VersionTLS12
	}
	if err := p.applyTLSFiles(o.TLSConfig, files); err != nil {
		return nil, err
	}
	if o.PoolSize == 0 {
		o.PoolSize = PoolSize
	}
	o.ContextTimeoutEnabled = true
	return redis.NewClusterClient(o), nil
}

// sentinel reads
// redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]
// with go-redis's ParseFailoverURL. The user and password are those of the
// master (and its replicas); the sentinels are reached without them.
func (p *urlParser) sentinel() (redis.UniversalClient, error) {
	addrs, err := p.hosts()
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(p.u.Path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return nil, p.fail("the path must be /service_name or /service_name/db")
	}
	db := ""
	if len(parts) == 2 {
		if n, err := strconv.Atoi(parts[1]); err != nil || n < 0 {
			return nil, p.fail("db %q is not a number >= 0", parts[1])
		}
		db = parts[1]
	}
	q := p.u.Query()
	for _, r := range [][2]string{
		{"addr", "the addresses go in the host part, separated by commas"},
		{"master_name", "the service name goes in the path"},
		{"username", "the user goes before the host, as user:password@"},
		{"password", "the password goes before the host, as user:password@"},
		{"db", "the db goes in the path, after the service name"},
	} {
		if err := p.refuse(q, r[0], r[1]); err != nil {
			return nil, err
		}
	}
	files, err := p.takeTLSFiles(q)
	if err != nil {
		return nil, err
	}
	q["addr"] = addrs[1:]
	q.Set("master_name", parts[0])
	o, err := redis.ParseFailoverURL(p.goRedisURL(addrs[0], db, q))
	if err != nil {
		return nil, p.goRedisError(err)
	}
	o.Username, o.Password = credentials(p.u)
	if err := p.applyTLSFiles(o.TLSConfig, files); err != nil {
		return nil, err
	}
	if o.PoolSize == 0 {
		o.PoolSize = PoolSize
	}
	o.ContextTimeoutEnabled = true
	return redis.NewFailoverClient(o), nil
}

// goRedisURL is the URL in the form go-redis's cluster and failover
// parsers read: one host, the others in addr parameters. The user and
// password of a sentinel URL are set on the options afterwards, since
// ParseFailoverURL would send them to the sentinels.
func (p *urlParser) goRedisURL(addr, db string, q url.Values) string {
	v := url.URL{Scheme: "redis", Host: addr, RawQuery: q.Encode()}
	if p.tlsScheme() {
		v.Scheme = "rediss"
	}
	if db != "" {
		v.Path = "/" + db
	}
	if strings.HasSuffix(p.u.Scheme, "+cluster") {
		v.User = p.u.User
	}
	return v.String()
}

// refuse fails when q has the parameter name, which this form of URL
// spells elsewhere.
func (p *urlParser) refuse(q url.Values, name, where string) error {
	if q.Has(name) {
		return p.fail("parameter %s is not accepted here: %s", name, where)
	}
	return nil
}

// hosts splits the host part of a multi-host URL and checks each address.
func (p *urlParser) hosts() ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(p.u.Host, ",") {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return nil, p.fail("address %q is not host:port", a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, p.fail("port %q is not in 1..65535", port)
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

// tlsFiles are the paths named by timely's TLS parameters; empty when
// absent.
type tlsFiles struct{ ca, cert, key string }

// takeTLSFiles removes timely's TLS parameters from q and checks them.
func (p *urlParser) takeTLSFiles(q url.Values) (tlsFiles, error) {
	var f tlsFiles
	for _, param := range []struct {
		name string
		dst  *string
	}{{ParamCACerts, &f.ca}, {ParamCertFile, &f.cert}, {ParamKeyFile, &f.key}} {
		vs, ok := q[param.name]
		if !ok {
			continue
		}
		delete(q, param.name)
		if !p.tlsScheme() {
			return f, p.fail("parameter %s needs TLS: use rediss://, rediss+cluster:// "+
				"or rediss+sentinel://", param.name)
		}
		if len(vs) != 1 || vs[0] == "" {
			return f, p.fail("parameter %s must name one file, not %q", param.name, vs)
		}
		*param.dst = vs[0]
	}
	if (f.cert == "") != (f.key == "") {
		return f, p.fail("parameters %s and %s go together: a client certificate "+
			"needs its key", ParamCertFile, ParamKeyFile)
	}
	return f, nil
}

// applyTLSFiles loads the files into cfg, the TLS configuration go-redis
// made for a TLS scheme (nil otherwise, when files is empty).
func (p *urlParser) applyTLSFiles(cfg *tls.Config, f tlsFiles) error {
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return p.fail("%s: %v", ParamCACerts, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return p.fail("%s: no PEM certificate in %q", ParamCACerts, f.ca)
		}
		cfg.RootCAs = pool
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return p.fail("%s and %s: %v", ParamCertFile, ParamKeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// redactURL is the URL with its password, and the value of any parameter
// whose name mentions a password, replaced by "xxxxx".
func redactURL(u *url.URL) string {
	v := *u
	if v.User != nil {
		if _, ok := v.User.Password(); ok {
			v.User = url.UserPassword(v.User.Username(), "xxxxx")
		}
	}
	v.RawQuery = queryPassword.ReplaceAllString(v.RawQuery, "${1}xxxxx")
	return v.String()
}

// queryPassword matches the value of a query parameter whose name
// mentions a password.
var queryPassword = regexp.MustCompile(`(?i)((?:^|[&;])[^=&;]*password[^=&;]*=)[^&;]*`)

// redact hides the password of a URL that url.Parse could not read: the
// whole user part goes, since its shape is unknown.
func redact(raw string) string {
	at := strings.LastIndex(raw, "@")
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return queryPassword.ReplaceAllString(raw, "${1}xxxxx")
	}
	return queryPassword.ReplaceAllString(raw[:scheme+3]+"xxxxx"+raw[at:], "${1}xxxxx")
}
