package main

// The floor server: the same load through the thinnest server that can
// carry it, so that every gateway figure can be put against what this
// machine can do at all. It is a child ssebench process (so that its CPU and
// RSS are measured apart from the clients', as a gateway's are): raw TCP
// connections, a fixed HTTP/1.1 response header with a close-delimited body
// (no chunking), and pre-encoded SSE frames written straight to the sockets.
// No HTTP framework, no Redis, no per-client queue or goroutine.
//
// The parent sends it frames on its standard input, one record each:
//
//	kind(1) nameLen(2, big endian) frameLen(4, big endian) name frame
//
// kind 'H' keeps the frame for clients that resume (the floor's stand-in for
// the Redis stream), 'L' only fans it out, 'C' fans it out and then closes
// the job's connections (the terminal event). 'S' (no name, no frame) is
// answered with a line on standard output once every record before it is
// applied, as a publish to Redis returns once the event is stored. End of
// input stops the server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// floorChildEnv, set to 1 in the environment, makes the process the floor
// server whatever its arguments (test binaries re-execute themselves so).
const floorChildEnv = "SSEBENCH_FLOOR_SERVER"

// Record kinds of the floor control protocol.
const (
	floorHistory  = 'H'
	floorLive     = 'L'
	floorComplete = 'C'
	floorSync     = 'S'
)

// floorHistoryMax is how many frames a job keeps for resuming clients, as
// Redis keeps about 1000 stream entries per job by default.
const floorHistoryMax = 1000

// fanChunk is how many connections one fan-out task writes; larger
// fan-outs are split over GOMAXPROCS writers.
const fanChunk = 256

const floorHeader = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\nretry: 2000\n\n"

// floorServerMain runs the floor server: args are the flags after
// "floor-server".
func floorServerMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ssebench floor-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	hb := fs.Duration("heartbeat", 30*time.Second, "heartbeat interval")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := raiseNoFile(); err != nil {
		fmt.Fprintf(stderr, "ssebench floor-server: %v\n", err)
	}
	// The parent ends the server by closing its input, after the last
	// frame, even when a Ctrl-C reached the whole process group; if the
	// parent dies, the kernel kills the server (Pdeathsig).
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "ssebench floor-server: %v\n", err)
		return 1
	}
	s := newFloorServer()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.accept(l) })
	wg.Go(func() { s.heartbeats(ctx, *hb) })
	fmt.Fprintf(stdout, "listening %s\n", l.Addr())
	err = s.control(bufio.NewReaderSize(stdin, 64<<10), stdout)
	cancel()
	_ = l.Close()
	s.closeAll()
	wg.Wait()
	close(s.work)
	if err != nil {
		fmt.Fprintf(stderr, "ssebench floor-server: %v\n", err)
		return 1
	}
	return 0
}

type floorServer struct {
	mu   sync.Mutex // guards jobs
	jobs map[string]*floorJob

	work chan fanTask
}

type floorJob struct {
	name string

	mu sync.Mutex // guards the fields below
	// conns is replaced, never changed in place below its length, so a
	// fan-out may keep using the slice it took.
	conns   []net.Conn
	history []floorFrame
	done    bool // the terminal event was sent
}

type floorFrame struct {
	id   protocol.ID
	wire []byte
}

type fanTask struct {
	conns []net.Conn
	wire  []byte
	wg    *sync.WaitGroup
	dead  *deadConns
}

type deadConns struct {
	mu    sync.Mutex // guards conns
	conns []net.Conn
}

func (d *deadConns) add(c net.Conn) {
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
}

func newFloorServer() *floorServer {
	s := &floorServer{jobs: map[string]*floorJob{}, work: make(chan fanTask, 64)}
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for t := range s.work {
				writeAll(t.conns, t.wire, t.dead)
				t.wg.Done()
			}
		}()
	}
	return s
}

func writeAll(conns []net.Conn, wire []byte, dead *deadConns) {
	for _, c := range conns {
		if _, err := c.Write(wire); err != nil {
			dead.add(c)
		}
	}
}

func (s *floorServer) job(name string) *floorJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[name]
	if j == nil {
		j = &floorJob{name: name}
		s.jobs[name] = j
	}
	return j
}

func (s *floorServer) accept(l net.Listener) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, say: wait and go on, as
			// net/http does.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		go s.handshake(c)
	}
}

// handshake reads the request, writes the response header and what the
// client must get first (a status snapshot, or the history after its
// Last-Event-ID), and hands the connection to its job. No goroutine stays
// with the connection: a client that left is noticed at the next write.
func (s *floorServer) handshake(c net.Conn) {
	job, lastID, resume, err := readRequest(c)
	if err != nil {
		_ = c.Close()
		return
	}
	j := s.job(job)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		_, _ = c.Write([]byte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
		_ = c.Close()
		return
	}
	buf := make([]byte, 0, 512)
	buf = append(buf, floorHeader...)
	if resume {
		for _, f := range j.history {
			if lastID.Less(f.id) {
				buf = append(buf, f.wire...)
			}
		}
	} else {
		status, _ := json.Marshal(event.NewStatus(job, event.StatusProcessing, time.Now()))
		buf, _ = (&event.Message{Event: string(event.TypeStatus), Data: status}).AppendTo(buf)
	}
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Write(buf)
	_ = c.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	j.conns = append(j.conns, c)
}

// readRequest reads an HTTP/1.1 request head and returns the job of its
// /api/reports/JOB/stream path and its Last-Event-ID.
func readRequest(c net.Conn) (job string, lastID protocol.ID, resume bool, err error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for !bytes.Contains(buf, []byte("\r\n\r\n")) {
		if len(buf) > 16<<10 {
			return "", lastID, false, errors.New("request head too large")
		}
		n, err := c.Read(tmp)
		if err != nil {
			return "", lastID, false, err
		}
		buf = append(buf, tmp[:n]...)
	}
	head := string(buf[:bytes.Index(buf, []byte("\r\n\r\n"))])
	lines := strings.Split(head, "\r\n")
	f := strings.Fields(lines[0])
	if len(f) != 3 {
		return "", lastID, false, errors.New("bad request line")
	}
	path, _, _ := strings.Cut(f[1], "?")
	rest, ok := strings.CutPrefix(path, "/api/reports/")
	job, ok2 := strings.CutSuffix(rest, "/stream")
	if !ok || !ok2 || !protocol.ValidJobID(job) {
		return "", lastID, false, errors.New("bad path")
	}
	for _, h := range lines[1:] {
		name, val, _ := strings.Cut(h, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Last-Event-ID") {
			if id, err := protocol.ParseID(strings.TrimSpace(val)); err == nil {
				return job, id, true, nil
			}
		}
	}
	return job, lastID, false, nil
}

// control applies the parent's records until its end of input.
func (s *floorServer) control(r *bufio.Reader, out io.Writer) error {
	var hdr [7]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("control: %w", err)
		}
		kind := hdr[0]
		nameLen := int(binary.BigEndian.Uint16(hdr[1:3]))
		frameLen := int(binary.BigEndian.Uint32(hdr[3:7]))
		if frameLen > 16<<20 {
			return fmt.Errorf("control: frame of %d bytes", frameLen)
		}
		rec := make([]byte, nameLen+frameLen)
		if _, err := io.ReadFull(r, rec); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		if kind == floorSync {
			if _, err := fmt.Fprintln(out, "synced"); err != nil {
				return fmt.Errorf("control: %w", err)
			}
			continue
		}
		j := s.job(string(rec[:nameLen]))
		wire := rec[nameLen:]
		j.mu.Lock()
		if kind == floorHistory {
			id, err := frameID(wire)
			if err != nil {
				j.mu.Unlock()
				return fmt.Errorf("control: %w", err)
			}
			if len(j.history) == floorHistoryMax {
				j.history = append(j.history[:0], j.history[1:]...)
			}
			j.history = append(j.history, floorFrame{id: id, wire: wire})
		}
		if kind == floorComplete {
			j.done = true
		}
		conns := j.conns
		j.mu.Unlock()
		s.fanout(j, conns, wire)
		if kind == floorComplete {
			j.mu.Lock()
			conns, j.conns = j.conns, nil
			j.mu.Unlock()
			for _, c := range conns {
				_ = c.Close()
			}
		}
	}
}

// frameID returns the ID of a frame that starts with its id line.
func frameID(wire []byte) (protocol.ID, error) {
	rest, ok := bytes.CutPrefix(wire, []byte("id: "))
	i := bytes.IndexByte(rest, '\n')
	if !ok || i < 0 {
		return protocol.ID{}, errors.New("history frame without an id line")
	}
	return protocol.ParseID(string(rest[:i]))
}

// fanout writes wire to conns, split over the writers when there are many,
// and drops the connections whose write failed.
func (s *floorServer) fanout(j *floorJob, conns []net.Conn, wire []byte) {
	var dead deadConns
	if len(conns) <= fanChunk {
		writeAll(conns, wire, &dead)
	} else {
		var wg sync.WaitGroup
		for i := 0; i < len(conns); i += fanChunk {
			wg.Add(1)
			s.work <- fanTask{conns: conns[i:min(i+fanChunk, len(conns))], wire: wire, wg: &wg, dead: &dead}
		}
		wg.Wait()
	}
	if len(dead.conns) == 0 {
		return
	}
	gone := map[net.Conn]bool{}
	for _, c := range dead.conns {
		gone[c] = true
		_ = c.Close()
	}
	j.mu.Lock()
	keep := make([]net.Conn, 0, len(j.conns))
	for _, c := range j.conns {
		if !gone[c] {
			keep = append(keep, c)
		}
	}
	j.conns = keep
	j.mu.Unlock()
}

func (s *floorServer) heartbeats(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			data, _ := json.Marshal(event.NewHeartbeat(now))
			wire, _ := (&event.Message{Event: string(event.TypeHeartbeat), Data: data}).Bytes()
			s.mu.Lock()
			jobs := make([]*floorJob, 0, len(s.jobs))
			for _, j := range s.jobs {
				jobs = append(jobs, j)
			}
			s.mu.Unlock()
			for _, j := range jobs {
				j.mu.Lock()
				conns := j.conns
				j.mu.Unlock()
				s.fanout(j, conns, wire)
			}
		}
	}
}

func (s *floorServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs {
		j.mu.Lock()
		for _, c := range j.conns {
			_ = c.Close()
		}
		j.conns = nil
		j.mu.Unlock()
	}
}

// floorTarget is the parent's side: it starts the floor server and sends it
// the frames to publish.
type floorTarget struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	addr   string
	lines  chan string // the server's standard output after its address
	names  []string
	ms     uint64
	pad    string

	mu sync.Mutex // guards w
	w  *bufio.Writer
}

// startFloor starts the floor server as a child process of this binary and
// waits for its address.
func startFloor(c *config, stderr io.Writer) (*floorTarget, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	cmd := exec.Command(exe, "floor-server", "--heartbeat", c.heartbeat.String())
	cmd.Env = append(os.Environ(), floorChildEnv+"=1")
	cmd.Stderr = stderr
	// The server must not outlive ssebench, however ssebench ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("floor: start server: %w", err)
	}
	t := &floorTarget{
		cmd: cmd, stdin: stdin, exited: make(chan struct{}), lines: make(chan string, 16), w: bufio.NewWriterSize(stdin, 64<<10),
		ms: uint64(time.Now().UnixMilli()), pad: padding(c.jobName(c.jobs-1), c.payload),
	}
	for j := range c.jobs {
		t.names = append(t.names, c.jobName(j))
	}
	addr := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		addr <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			t.lines <- strings.TrimSpace(line)
		}
		_ = cmd.Wait()
		close(t.exited)
	}()
	select {
	case t.addr = <-addr:
		if t.addr == "" {
			<-t.exited
			return nil, errors.New("floor: server exited at start")
		}
	case <-time.After(10 * time.Second):
		_ = t.close()
		return nil, errors.New("floor: server did not start in 10s")
	}
	return t, nil
}

func (t *floorTarget) pid() int { return t.cmd.Process.Pid }

func (t *floorTarget) send(kind byte, job string, wire []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var hdr [7]byte
	hdr[0] = kind
	binary.BigEndian.PutUint16(hdr[1:3], uint16(len(job)))
	binary.BigEndian.PutUint32(hdr[3:7], uint32(len(wire)))
	_, _ = t.w.Write(hdr[:])
	_, _ = t.w.WriteString(job)
	_, _ = t.w.Write(wire)
	if err := t.w.Flush(); err != nil {
		return fmt.Errorf("floor: send: %w", err)
	}
	return nil
}

func (t *floorTarget) register(context.Context, int) error { return nil }

// sync waits until the server has applied every record sent so far.
func (t *floorTarget) sync(ctx context.Context) error {
	if err := t.send(floorSync, "", nil); err != nil {
		return err
	}
	select {
	case <-t.lines:
		return nil
	case <-t.exited:
		return errors.New("floor: server exited")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *floorTarget) progress(_ context.Context, j, step int, history bool) (protocol.ID, error) {
	id := protocol.ID{Ms: t.ms, Seq: uint64(step)}
	now := time.Now()
	data := progressData(t.names[j], step, stepName(now, t.pad), now)
	wire, err := (&event.Message{ID: id.String(), Event: string(event.TypeProgress), Data: data}).Bytes()
	if err != nil {
		return id, err
	}
	kind := byte(floorLive)
	if history {
		kind = floorHistory
	}
	return id, t.send(kind, t.names[j], wire)
}

func (t *floorTarget) complete(_ context.Context, j, last int) error {
	id := protocol.ID{Ms: t.ms, Seq: uint64(last + 1)}
	data, _ := json.Marshal(event.NewCompleteRecord(t.names[j], "ssebench", false, time.Now()).ForClient(nil))
	wire, err := (&event.Message{ID: id.String(), Event: string(event.TypeComplete), Data: data}).Bytes()
	if err != nil {
		return err
	}
	return t.send(floorComplete, t.names[j], wire)
}

// close ends the server: end of input, then SIGKILL if it has not exited
// within 5 s.
func (t *floorTarget) close() error {
	_ = t.stdin.Close()
	select {
	case <-t.exited:
	case <-time.After(5 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.exited
	}
	return nil
}
