package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRun: the broker's certificate verifies against ca.pem for the hosts
// it names and no other; a second run keeps both files; a run when the
// certificate has less than 30 days left writes a new identity; -hosts
// without a host and no -dir are refused.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if err := run(dir, []string{"127.0.0.1", "localhost"}, now); err != nil {
		t.Fatal(err)
	}
	ca, leaf := read(t, dir)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "broker.example.com", CurrentTime: now}); err == nil {
		t.Error("verified for a host it does not name")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: x509.NewCertPool(), DNSName: "127.0.0.1", CurrentTime: now}); err == nil {
		t.Error("verified without the CA")
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err := run(dir, []string{"127.0.0.1"}, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(before, after) {
		t.Error("a second run replaced a valid identity")
	}
	if err := run(dir, []string{"127.0.0.1"}, now.Add(340*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); bytes.Equal(before, after) {
		t.Error("an identity with less than 30 days left was kept")
	}
	if err := run(t.TempDir(), []string{" "}, now); err == nil {
		t.Error("-hosts without a host: nil error")
	}
	if err := run("", []string{"127.0.0.1"}, now); err == nil {
		t.Error("no -dir: nil error")
	}
}

// read returns the CA and the broker's certificate, checking that
// broker.pem starts with a PKCS#8 key.
func read(t *testing.T, dir string) (ca, leaf *x509.Certificate) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if ca, err = x509.ParseCertificate(blk.Bytes); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(filepath.Join(dir, "broker.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, rest := pem.Decode(b)
	if key == nil || key.Type != "PRIVATE KEY" {
		t.Fatalf("broker.pem does not start with a PKCS#8 key")
	}
	if _, err := x509.ParsePKCS8PrivateKey(key.Bytes); err != nil {
		t.Fatal(err)
	}
	blk, _ = pem.Decode(rest)
	if leaf, err = x509.ParseCertificate(blk.Bytes); err != nil {
		t.Fatal(err)
	}
	return ca, leaf
}
