package client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"

	"github.com/OSMeteor/firetower/broker"
)

func init() {
	broker.Register("topicsvc", openURL)
	broker.Register("topicsvcs", openURL)
}

// openURL opens topicsvc://host:port (plaintext) or topicsvcs://host:port
// (TLS, verified against the system roots, or against the PEM file named by
// the query parameter ca: topicsvcs://host:port?ca=/etc/firetower/ca.pem).
func openURL(u *url.URL, o broker.Options) (broker.Broker, error) {
	opts := Options{Token: o.Token, Logger: o.Logger}
	if u.Scheme == "topicsvcs" {
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			host = u.Host
		}
		opts.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if ca := u.Query().Get("ca"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("topicsvc: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("topicsvc: CA file %s holds no PEM certificate", ca)
			}
			opts.TLS.RootCAs = pool
		}
	}
	return Dial(u.Host, opts)
}
