package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The serving certificate (Config.TLSCertFile and TLSKeyFile) is loaded by
// New, and loaded again by ReloadCertificate (cmd/gateway calls it on
// SIGHUP) and whenever a poll of the two files, every certPollInterval,
// finds either changed. A handshake takes whatever certificate is current
// (tls.Config.GetCertificate), so new connections get the new one and open
// ones, and their streams, go on. A pair that does not load (a file
// missing, unparsable, a key that is not the certificate's, the second file
// not written yet) is logged and the current certificate kept; the poll
// tries again once either file changes again.
//
// A change is a change of what os.Stat sees, symlinks followed: the
// modification time, the size, or the file itself (os.SameFile). A
// Kubernetes Secret volume, which cert-manager's renewals update, swaps a
// symlink to a new directory at once, so both files change together.

// certPollInterval is how often the certificate's files are looked at.
const certPollInterval = 5 * time.Second

// certReloader holds the serving certificate and reloads it from its files.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu    sync.Mutex     // one load at a time; guards stamp
	stamp [2]os.FileInfo // of the two files when last loaded, or tried
}

// statFile is what os.Stat says of a file, symlinks followed; nil when it
// fails (a file missing while its directory is swapped, say).
func statFile(name string) os.FileInfo {
	fi, err := os.Stat(name)
	if err != nil {
		return nil
	}
	return fi
}

// sameStat reports whether two stats of a file say it did not change.
func sameStat(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// newCertReloader loads the pair, or fails.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads both files and, if they make a pair, makes it the current
// certificate. The files are stat'ed before they are read: a change after
// the stat is seen by the next poll.
func (r *certReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamp = [2]os.FileInfo{statFile(r.certFile), statFile(r.keyFile)}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("gateway: TLS certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil { // LoadX509KeyPair sets it (unless GODEBUG x509keypairleaf=0)
		return errors.New("gateway: TLS certificate " + r.certFile + ": no leaf certificate")
	}
	r.cert.Store(&cert)
	return nil
}

// changed reports whether either file looks different from when it was
// last loaded.
func (r *certReloader) changed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !sameStat(r.stamp[0], statFile(r.certFile)) || !sameStat(r.stamp[1], statFile(r.keyFile))
}

// reload loads the pair and logs the outcome; why says what asked for it.
func (r *certReloader) reload(why string) error {
	old := r.cert.Load().Leaf
	if err := r.load(); err != nil {
		r.log.Error("TLS certificate not reloaded; keeping the current one", "trigger", why, "err", err,
			"serial", old.SerialNumber.String(), "not_after", old.NotAfter)
		return err
	}
	leaf := r.cert.Load().Leaf
	r.log.Info("TLS certificate reloaded", "trigger", why, "subject", leaf.Subject.String(),
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter, "previous_serial", old.SerialNumber.String())
	return nil
}

// getCertificate is the tls.Config's GetCertificate: the current pair.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// tlsConfig is the server's TLS configuration: HTTP/2 or HTTP/1.1 by ALPN.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12, // HTTP/2 requires 1.2 or later
		NextProtos:     []string{http2ALPN, "http/1.1"},
		GetCertificate: r.getCertificate,
	}
}

// watch polls the files every interval and reloads the pair when they
// change, until stop is called; stop waits for the poll to end.
func (r *certReloader) watch(every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if r.changed() {
					_ = r.reload("files changed") // logged
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// ReloadCertificate loads Config.TLSCertFile and TLSKeyFile again (the
// Server also does by itself when they change): new TLS handshakes present
// the new certificate, open connections keep theirs. When the pair does not
// load, the current certificate stays; the error is logged and returned.
// cmd/gateway calls it on SIGHUP. Without TLS it returns an error.
func (s *Server) ReloadCertificate() error {
	if s.certs == nil {
		return errors.New("gateway: no TLS certificate to reload (Config.TLSCertFile is empty)")
	}
	return s.certs.reload("reload requested")
}
