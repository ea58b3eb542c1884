package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func mustClient(t *testing.T, raw string) redis.UniversalClient {
	t.Helper()
	c, now, err := newClient(raw)
	if err != nil {
		t.Fatalf("newClient(%q): %v", raw, err)
	}
	t.Cleanup(func() { c.Close() })
	if now != nil {
		t.Cleanup(func() { now.Close() })
	}
	return c
}

func TestURLSingleServer(t *testing.T) {
	o := mustClient(t, "redis://alice:s3cret@db.example:6380/2?dial_timeout=3").(*redis.Client).Options()
	if o.Addr != "db.example:6380" || o.DB != 2 || o.Username != "alice" ||
		o.Password != "s3cret" || o.DialTimeout != 3*time.Second || o.TLSConfig != nil {
		t.Fatalf("options = %+v", o)
	}
	if o.PoolSize != PoolSize {
		t.Fatalf("pool size %d, want the default %d", o.PoolSize, PoolSize)
	}
	if o := mustClient(t, "redis://h:1?pool_size=9").(*redis.Client).Options(); o.PoolSize != 9 {
		t.Fatalf("pool_size=9 gave %d", o.PoolSize)
	}

	o = mustClient(t, "unix:///run/redis.sock?db=3").(*redis.Client).Options()
	if o.Network != "unix" || o.Addr != "/run/redis.sock" || o.DB != 3 {
		t.Fatalf("unix options = %+v", o)
	}

	o = mustClient(t, "rediss://h.example:6390").(*redis.Client).Options()
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "h.example" ||
		o.TLSConfig.RootCAs != nil || o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("rediss:// should verify against the system roots: %+v", o.TLSConfig)
	}
}

func TestURLCluster(t *testing.T) {
	c := mustClient(t, "redis+cluster://bob:pw@10.0.0.1:7000,10.0.0.2:7001,h3:7002?read_timeout=2s")
	o := c.(*redis.ClusterClient).Options()
	want := []string{"10.0.0.1:7000", "10.0.0.2:7001", "h3:7002"}
	if strings.Join(o.Addrs, " ") != strings.Join(want, " ") {
		t.Fatalf("addrs = %v, want %v", o.Addrs, want)
	}
	if o.Username != "bob" || o.Password != "pw" || o.ReadTimeout != 2*time.Second ||
		o.PoolSize != PoolSize || o.TLSConfig != nil {
		t.Fatalf("options = %+v", o)
	}
	o = mustClient(t, "rediss+cluster://10.0.0.1:7000").(*redis.ClusterClient).Options()
	if o.TLSConfig == nil {
		t.Fatal("rediss+cluster:// made no TLS configuration")
	}
}

func TestURLSentinel(t *testing.T) {
	c := mustClient(t, "redis+sentinel://:masterpw@s1:26379,s2:26380/mymaster/4?dial_timeout=1")
	o := c.(*redis.Client).Options()
	if o.DB != 4 || o.Password != "masterpw" || o.DialTimeout != time.Second || o.TLSConfig != nil {
		t.Fatalf("options = %+v", o)
	}
	o = mustClient(t, "rediss+sentinel://s1:26379/mymaster").(*redis.Client).Options()
	if o.TLSConfig == nil || o.DB != 0 {
		t.Fatalf("rediss+sentinel:// options = %+v", o)
	}
}

// TestURLErrors checks that each malformed URL is refused with ErrURL, a
// message saying what is wrong, and never the password.
func TestURLErrors(t *testing.T) {
	cases := []struct{ url, says string }{
		{"http://h:1", "unsupported scheme"},
		{"redis://:hunter2@h:1/x", "database number"},
		{"redis://:hunter2@h:1?bogus=1", "unexpected option: bogus"},
		{"redis://:hunter2@h:1?password=hunter2", "unexpected option: password"},
		{"redis://:hunter2@h:1?ssl_ca_certs=/ca.pem", "needs TLS"},
		{"unix://:hunter2@", "empty unix socket path"},
		{"redis+cluster://:hunter2@h1:1,:2", "not host:port"},
		{"redis+cluster://:hunter2@h1:1,h2:0", "not in 1..65535"},
		{"redis+cluster://:hunter2@h1:1/3", "no path"},
		{"redis+cluster://:hunter2@h1:1?addr=h2:2", "parameter addr"},
		{"redis+cluster://:hunter2@h1:1?db=1", "unexpected option: db"},
		{"redis+sentinel://:hunter2@s1:1", "/service_name"},
		{"redis+sentinel://:hunter2@s1:1/m/x", "db \"x\""},
		{"redis+sentinel://:hunter2@s1:1/m/1/2", "/service_name"},
		{"redis+sentinel://:hunter2@s1:1/m?master_name=n", "parameter master_name"},
		{"redis+sentinel://s1:1/m?password=hunter2", "parameter password"},
		{"rediss://:hunter2@h:1?ssl_certfile=/c.pem", "go together"},
		{"rediss://:hunter2@h:1?ssl_ca_certs=", "must name one file"},
		{"rediss://:hunter2@h:1?ssl_ca_certs=/no/such/ca.pem", "no such file"},
		{"memory://x?ttl=1", "only a name"},
		{"redis://:hunter2@h:1:2:3/%zz", "cannot be parsed"},
	}
	for _, c := range cases {
		_, _, err := newClient(c.url)
		if err == nil {
			t.Errorf("%s: accepted", c.url)
			continue
		}
		if !errors.Is(err, ErrURL) {
			t.Errorf("%s: %v does not wrap ErrURL", c.url, err)
		}
		if !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: error %q does not say %q", c.url, err, c.says)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error %q shows the password", c.url, err)
		}
	}
}

// TestURLTLSFiles loads a CA file and a client certificate named in the
// URL into the TLS configuration, and drops the parameters before go-redis
// sees them.
func TestURLTLSFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	raw := "rediss://h:6379?ssl_ca_certs=" + cert + "&ssl_certfile=" + cert +
		"&ssl_keyfile=" + key + "&skip_verify=false"
	o := mustClient(t, raw).(*redis.Client).Options()
	if o.TLSConfig.RootCAs == nil || len(o.TLSConfig.Certificates) != 1 {
		t.Fatalf("TLS configuration lacks the files: %+v", o.TLSConfig)
	}

	co := mustClient(t, "rediss+cluster://h:1,h:2?ssl_ca_certs="+cert).(*redis.ClusterClient).Options()
	if co.TLSConfig.RootCAs == nil {
		t.Fatal("cluster TLS configuration lacks the CA")
	}

	_, _, err := newClient("rediss://h:1?ssl_ca_certs=" + key)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a key file as CA file gave %v", err)
	}
}

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://u:pw@h:1/0":           "redis://u:xxxxx@h:1/0",
		"redis://h:1?password=pw&db=1": "redis://h:1?password=xxxxx&db=1",
		"redis://h:1":                  "redis://h:1",
	} {
		u, err := parseForTest(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := redactURL(u); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", raw, got, want)
		}
	}
	const bad, want = "redis://u:p@w@h:1:2:3?sentinel_password=x", "redis://xxxxx@h:1:2:3?sentinel_password=xxxxx"
	if got := redact(bad); got != want {
		t.Errorf("redact(%q) = %q, want %q", bad, got, want)
	}
}

// writeSelfSigned writes a throwaway self-signed certificate and its key
// as PEM files into dir and returns their paths.
func writeSelfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "timely test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(certPath, "CERTIFICATE", der)
	write(keyPath, "EC PRIVATE KEY", kder)
	return certPath, keyPath
}

func parseForTest(raw string) (*url.URL, error) { return url.Parse(raw) }
