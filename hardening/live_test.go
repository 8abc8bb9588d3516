package hardening

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeLive is a running system that takes what apply writes below root.
type fakeLive struct {
	root   string
	sysctl map[string]string
	active map[string]bool
	calls  []string
}

func (l *fakeLive) Sysctl(_ context.Context, key string) (string, error) { return l.sysctl[key], nil }

func (l *fakeLive) ServiceActive(_ context.Context, unit string) (bool, error) {
	return l.active[unit], nil
}

func (l *fakeLive) ReloadSysctl(context.Context) error {
	l.calls = append(l.calls, "sysctl")
	data, _ := os.ReadFile(filepath.Join(l.root, sysctlFile))
	for _, st := range parseSysctl(data, sysctlFile) {
		l.sysctl[st.key] = st.value
	}
	return nil
}

func (l *fakeLive) StopServices(_ context.Context, units []string) error {
	l.calls = append(l.calls, "stop "+strings.Join(units, " "))
	for _, u := range units {
		l.active[u] = false
	}
	return nil
}

func (l *fakeLive) ReloadSystemd(context.Context) error {
	l.calls = append(l.calls, "daemon-reload")
	return nil
}
func (l *fakeLive) LoadFirewall(_ context.Context, file string) error {
	l.calls = append(l.calls, "nft "+file)
	return nil
}
func (l *fakeLive) RemoveFirewall(context.Context) error {
	l.calls = append(l.calls, "nft delete")
	return nil
}
func (l *fakeLive) ReloadSSH(context.Context) error { l.calls = append(l.calls, "ssh"); return nil }
func (l *fakeLive) ReloadFail2ban(context.Context) error {
	l.calls = append(l.calls, "fail2ban")
	return nil
}
func (l *fakeLive) LoadAuditRules(context.Context) error {
	l.calls = append(l.calls, "audit")
	return nil
}

func TestLiveOnlyForSlash(t *testing.T) {
	if l := (Options{}).live(t.TempDir()); l != nil {
		t.Errorf("a scratch root gets a live system: %T", l)
	}
	if _, ok := (Options{}).live("/").(hostLive); !ok {
		t.Error("root / does not get the host")
	}
}

func TestLiveSystemFollowsApply(t *testing.T) {
	ctx := context.Background()
	p := loadExample(t)
	root := writeRoot(t, realisticRoot)
	live := &fakeLive{root: root, sysctl: map[string]string{}, active: map[string]bool{"bluetooth.service": true}}
	for k := range p.Spec.OS.Sysctl {
		live.sysctl[k] = "9"
	}
	opts := Options{Live: live}

	rep, err := Check(ctx, p, root, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Rule == "service:bluetooth" && !strings.Contains(r.Evidence, "running") ||
			r.Rule == "sysctl:net.ipv4.conf.all.rp_filter" && !strings.Contains(r.Evidence, "running kernel has 9") {
			t.Errorf("%s: live state missing from evidence %q", r.Rule, r.Evidence)
		}
	}
	if len(live.calls) != 0 {
		t.Fatalf("check changed the running system: %v", live.calls)
	}

	res, err := Apply(ctx, p, root, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sysctl", "stop bluetooth.service avahi-daemon.service", "nft " + nftFile, "ssh", "fail2ban", "audit"}
	if !reflect.DeepEqual(live.calls, want) {
		t.Errorf("live calls %q, want %q", live.calls, want)
	}
	if !res.Report.Compliant() {
		t.Errorf("not compliant after apply: %v", res.Report.Failing())
	}

	// Files match, but the running kernel drifted: apply reloads only sysctl.
	live.calls = nil
	live.sysctl["kernel.randomize_va_space"] = "0"
	res, err = Apply(ctx, p, root, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 || !reflect.DeepEqual(live.calls, []string{"sysctl"}) {
		t.Errorf("drift repair: changes %v, live calls %q", res.Changes, live.calls)
	}

	live.calls = nil
	if _, err := Undo(ctx, root, opts); err != nil {
		t.Fatal(err)
	}
	want = []string{"sysctl", "daemon-reload", "nft delete", "ssh", "fail2ban", "audit"}
	if !reflect.DeepEqual(live.calls, want) {
		t.Errorf("undo live calls %q, want %q", live.calls, want)
	}
}

func TestOneApplyAtATime(t *testing.T) {
	root := writeRoot(t, realisticRoot)
	f, err := openRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unlock, err := f.lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(context.Background(), loadExample(t), root, false, Options{}); !errors.Is(err, ErrBusy) {
		t.Errorf("apply while locked: %v, want ErrBusy", err)
	}
	if _, err := Undo(context.Background(), root, Options{}); !errors.Is(err, ErrBusy) {
		t.Errorf("undo while locked: %v, want ErrBusy", err)
	}
	if _, err := Apply(context.Background(), loadExample(t), root, true, Options{}); err != nil {
		t.Errorf("a dry run needs no lock: %v", err)
	}
	unlock()
	if _, err := Apply(context.Background(), loadExample(t), root, false, Options{}); err != nil {
		t.Errorf("apply after unlock: %v", err)
	}
}
