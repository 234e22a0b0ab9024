//go:build linux

package gateway

import (
	"bytes"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A write to a client that reset its connection fails with an error that
// names the system call that failed, as net's own do: write for one piece,
// writev for more.
func TestNBWriterErrorNamesItsCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pieces net.Buffers
	}{
		{"write", net.Buffers{bytes.Repeat([]byte("a"), 100)}},
		{"writev", net.Buffers{bytes.Repeat([]byte("a"), nbCopyMax), bytes.Repeat([]byte("b"), nbCopyMax)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			server, client := tcpPair(t, false)
			_ = client.SetLinger(0) // close with a reset
			client.Close()
			raw, err := server.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			nb := newNBWriter()
			// The first write may go out before the reset is in.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				_, err = nb.write(raw, append(net.Buffers(nil), tc.pieces...), true)
				if err != nil || time.Now().After(deadline) {
					break
				}
			}
			var op *net.OpError
			var sc *os.SyscallError
			switch {
			case err == nil:
				t.Fatal("writes to a reset connection kept succeeding for 5s")
			case !errors.As(err, &op) || !errors.As(err, &sc):
				t.Fatalf("error %v (%T): want a *net.OpError around an *os.SyscallError", err, err)
			case op.Op != tc.name || sc.Syscall != tc.name:
				t.Errorf("error %v: op %q, call %q; want %q for both", err, op.Op, sc.Syscall, tc.name)
			}
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Errorf("error %v: want ECONNRESET or EPIPE", err)
			}
		})
	}
}
