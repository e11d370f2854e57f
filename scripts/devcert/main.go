// Command devcert writes the test certificate authority and the test
// broker's TLS identity for scripts/up.sh's SASL_SSL listener: in -dir,
// ca.pem (the CA certificate: what clients trust, e.g.
// --kafka-tls-ca-file) and broker.pem (the broker's private key, PKCS#8,
// followed by its certificate and the CA's: a Kafka PEM keystore). The
// broker's certificate names -hosts (IP addresses or DNS names). Files
// that exist are kept while the broker's certificate has more than 30 days
// to run, so a restart keeps the identity clients trust; the CA's key is
// not kept: nothing else is ever signed with it.
//
// These are loopback-only test credentials, valid for a year: never use
// them anywhere else.
//
//	go run ./scripts/devcert -dir /var/tmp/saga-machine/kafka/tls -hosts 127.0.0.1,localhost
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory to write ca.pem and broker.pem into (created)")
	hosts := flag.String("hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the broker's certificate names")
	flag.Parse()
	if err := run(*dir, strings.Split(*hosts, ","), time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "devcert:", err)
		os.Exit(1)
	}
}

func run(dir string, hosts []string, now time.Time) error {
	if dir == "" {
		return errors.New("-dir is required")
	}
	caPath, brokerPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "broker.pem")
	if exists(caPath) && valid(brokerPath, now.Add(30*24*time.Hour)) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, caKey, caDER, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "saga-machine test CA (loopback only)"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil, now)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	leaf := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "saga-machine test broker"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h == "" {
			continue
		} else if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	if len(leaf.IPAddresses)+len(leaf.DNSNames) == 0 {
		return errors.New("-hosts names no host")
	}
	_, key, der, err := newCert(leaf, ca, caKey, now)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	broker := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	broker = append(broker, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	broker = append(broker, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := os.WriteFile(brokerPath, broker, 0o600); err != nil {
		return err
	}
	return os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
}

// newCert signs tmpl with a new RSA key (self-signed when parent is nil)
// and returns the certificate, its key and its DER.
func newCert(tmpl, parent *x509.Certificate, parentKey *rsa.PrivateKey, now time.Time) (*x509.Certificate, *rsa.PrivateKey, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(365*24*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, der, err
}

// valid reports whether the first certificate of the PEM file at p is
// still valid at t.
func valid(p string, t time.Time) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return false
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			return err == nil && t.Before(c.NotAfter)
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
