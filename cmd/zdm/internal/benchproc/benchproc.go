// Package benchproc holds what zdm's benchmark commands need to run zdm
// as a process of its own and to read what processes cost from /proc.
package benchproc

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// FreeAddrs returns n loopback addresses with free ports.
func FreeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		out = append(out, l.Addr().String())
		defer l.Close()
	}
	return out, nil
}

// WaitListening waits up to 30 s for addr to accept connections.
func WaitListening(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("zdm not listening on %s within 30s", addr)
}

// Stop interrupts cmd and waits for it, killing it after 10 s.
func Stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt) // a process that already exited is waited for below
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill() // then Wait returns
		<-done
	}
}

// PeakRSS is a process's peak resident memory in MiB (VmHWM); 0 when
// unknown.
func PeakRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0
			}
			return kb / 1024
		}
	}
	return 0
}

// GroupPids lists the processes of process group pgid (just pgid when
// pgrep cannot tell).
func GroupPids(pgid int) []int {
	out, err := exec.Command("pgrep", "-g", strconv.Itoa(pgid)).Output()
	if err != nil {
		return []int{pgid}
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// CPUSeconds is the user and system CPU time the processes have used;
// processes gone count nothing.
func CPUSeconds(pids []int) float64 {
	const ticks = 100 // USER_HZ on Linux
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses: state is
		// the first, utime the 12th, stime the 13th.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, uerr := strconv.ParseFloat(fields[11], 64)
		stime, serr := strconv.ParseFloat(fields[12], 64)
		if uerr == nil && serr == nil {
			total += (utime + stime) / ticks
		}
	}
	return total
}
