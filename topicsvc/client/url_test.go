package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

func TestOpenURL(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	b, err := broker.Open("topicsvc://"+svc.Addr, broker.Options{Token: svctest.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := b.(*client.Client); !ok {
		t.Fatalf("broker.Open gave %T", b)
	}
	if _, err := broker.Open("topicsvc://"+svc.Addr, broker.Options{}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Open without a token: %v, want an error about the token", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "firetower test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile
}

// TestTLS runs a node over topicsvcs:// against the binary with -tls-cert
// and -tls-key.
func TestTLS(t *testing.T) {
	cert, key := selfSigned(t)
	svc := svctest.Start(t, "127.0.0.1:0", "-tls-cert", cert, "-tls-key", key)
	var bs []broker.Broker
	for range 2 {
		b, err := broker.Open("topicsvcs://"+svc.Addr+"?ca="+cert, broker.Options{Token: svctest.Token})
		must(t, err)
		t.Cleanup(func() { b.Close() })
		bs = append(bs, b)
	}
	rec := svctest.NewRecorder()
	must(t, bs[0].Start(rec.Handle))
	must(t, bs[1].Start(func(broker.Message) {}))
	ctx := svctest.Ctx(t)
	must(t, bs[0].Subscribe(ctx, "secure"))
	must(t, bs[1].Publish(ctx, broker.Message{Topic: "secure", ID: "1", Data: []byte(`"over TLS"`)}))
	if m := rec.WaitN(t, 1, 10*time.Second)[0]; string(m.Data) != `"over TLS"` {
		t.Fatalf("got %+v", m)
	}
	if _, err := broker.Open("topicsvcs://"+svc.Addr+"?ca=/nonexistent.pem", broker.Options{Token: svctest.Token}); err == nil {
		t.Fatal("Open with a missing CA file succeeded")
	}
}
