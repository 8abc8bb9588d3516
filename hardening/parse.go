package hardening

import (
	"path"
	"strconv"
	"strings"
)

// This file reads the configuration formats the checks look at, the way the
// programs that own them do (first or last value wins, includes, drop-ins).

// setting is one assignment found in a configuration file.
type setting struct {
	key, value string
	file       string
	line       int // 1-based
}

func (s setting) where() string { return s.file + ":" + strconv.Itoa(s.line) }

// --- sysctl.d --------------------------------------------------------------

var sysctlDirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"}

// sysctlFiles lists the files systemd-sysctl and "sysctl --system" read, in
// order: *.conf by file name across the sysctl.d directories (a name in an
// earlier directory hides the same name in a later one), then
// /etc/sysctl.conf. extra, if not empty, is included as /etc/sysctl.d/extra
// whether or not it exists, so callers can place a file they will write.
func sysctlFiles(f *rootFS, extra string) []string {
	byName := map[string]string{}
	for _, d := range sysctlDirs {
		for _, p := range f.glob(d, "*.conf") {
			if _, ok := byName[path.Base(p)]; !ok {
				byName[path.Base(p)] = p
			}
		}
	}
	if extra != "" {
		byName[path.Base(extra)] = extra
	}
	var out []string
	for _, name := range sortedKeys(byName) {
		out = append(out, byName[name])
	}
	return append(out, "/etc/sysctl.conf")
}

func parseSysctl(data []byte, file string) []setting {
	var out []setting
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "-"), "=")
		if !ok {
			continue
		}
		k = strings.ReplaceAll(strings.TrimSpace(k), "/", ".")
		out = append(out, setting{key: k, value: strings.TrimSpace(v), file: file, line: i + 1})
	}
	return out
}

// sysctlKeyMatches reports whether a key as written in a file (possibly a
// glob such as net.ipv4.conf.*.rp_filter) sets key.
func sysctlKeyMatches(written, key string) bool {
	if written == key {
		return true
	}
	ok, _ := path.Match(written, key)
	return ok && strings.ContainsAny(written, "*?[")
}

// --- sshd_config -------------------------------------------------------------

// sshdDefaults are OpenSSH's compiled-in values for the keywords a policy sets.
var sshdDefaults = map[string]string{
	"permitrootlogin":              "prohibit-password",
	"passwordauthentication":       "yes",
	"kbdinteractiveauthentication": "yes",
	"x11forwarding":                "no",
	"maxauthtries":                 "6",
}

var sshdAliases = map[string]string{"challengeresponseauthentication": "kbdinteractiveauthentication"}

// sshdGlobal returns the global (outside any Match block) settings of an
// sshd configuration in the order sshd reads them, following Include. For
// each keyword sshd uses the first value it obtains.
func sshdGlobal(f *rootFS, file string) []setting {
	var out []setting
	var read func(file string, depth int) bool // false once a Match ends the global section
	read = func(file string, depth int) bool {
		data, err := f.readFile(file)
		if err != nil || depth > 8 {
			return true
		}
		for i, line := range strings.Split(string(data), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
				continue
			}
			kw, args := fields[0], fields[1:]
			if k, v, ok := strings.Cut(kw, "="); ok { // Keyword=value
				kw, args = k, append([]string{v}, args...)
			}
			kw = strings.ToLower(kw)
			if a, ok := sshdAliases[kw]; ok {
				kw = a
			}
			switch kw {
			case "match":
				return false
			case "include":
				for _, pat := range args {
					if !path.IsAbs(pat) {
						pat = path.Join("/etc/ssh", pat)
					}
					for _, inc := range f.glob(path.Dir(pat), path.Base(pat)) {
						if !read(inc, depth+1) {
							return false
						}
					}
				}
			default:
				if len(args) > 0 {
					out = append(out, setting{key: kw, value: strings.Trim(strings.Join(args, " "), `"`), file: file, line: i + 1})
				}
			}
		}
		return true
	}
	read(file, 0)
	return out
}

// --- fail2ban (INI) ----------------------------------------------------------

// iniSettings returns "section.key" settings of an INI file in order.
func iniSettings(data []byte, file string) []setting {
	var out []setting
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' { // continuation of a multi-line value
			if len(out) > 0 && out[len(out)-1].file == file {
				out[len(out)-1].value += "\n" + t
			}
			continue
		}
		if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			section = strings.TrimSpace(t[1 : len(t)-1])
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			if k, v, ok = strings.Cut(t, ":"); !ok {
				continue
			}
		}
		out = append(out, setting{key: section + "." + strings.TrimSpace(k), value: strings.TrimSpace(v), file: file, line: i + 1})
	}
	return out
}

// fail2banFiles are the jail files fail2ban reads, in order.
func fail2banFiles(f *rootFS) []string {
	files := []string{"/etc/fail2ban/jail.conf"}
	files = append(files, f.glob("/etc/fail2ban/jail.d", "*.conf")...)
	files = append(files, "/etc/fail2ban/jail.local")
	return append(files, f.glob("/etc/fail2ban/jail.d", "*.local")...)
}

// fail2banSeconds parses a fail2ban time such as 600, 10m or 1h.
func fail2banSeconds(s string) (int, bool) {
	s = strings.TrimSpace(s)
	mult := 1
	for suf, m := range map[string]int{"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	return n * mult, true
}

// --- apt.conf ----------------------------------------------------------------

// aptConfig is the effective apt configuration: scalar values and lists.
type aptConfig struct {
	values map[string]setting
	lists  map[string][]string
}

// aptFiles are the files apt reads: apt.conf.d parts in name order (names of
// letters, digits, '_', '-', '.', with no extension or ".conf"), then apt.conf.
func aptFiles(f *rootFS) []string {
	var out []string
	ents, _ := f.readDir("/etc/apt/apt.conf.d")
	for _, e := range ents {
		n := e.Name()
		if strings.Trim(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != "" {
			continue
		}
		if ext := path.Ext(n); ext != "" && ext != ".conf" {
			continue
		}
		out = append(out, path.Join("/etc/apt/apt.conf.d", n))
	}
	return append(out, "/etc/apt/apt.conf")
}

// parseApt adds one apt.conf file to c. It understands the subset of the
// syntax the checks need: comments, nested scopes, "Key value;", list items,
// and #clear.
func (c *aptConfig) parse(data []byte, file string) {
	toks := aptTokens(string(data))
	var scope []string
	var pending []string // words since the last ';', '{' or '}'
	line := 1
	for _, t := range toks {
		line = t.line
		switch {
		case t.text == "{" && !t.quoted:
			if len(pending) > 0 {
				scope = append(scope, pending[0])
				if len(pending) > 1 { // "Key value {": unusual; keep the key
					pending = nil
				}
			} else {
				scope = append(scope, "")
			}
			pending = nil
		case t.text == "}" && !t.quoted:
			if len(scope) > 0 {
				scope = scope[:len(scope)-1]
			}
			pending = nil
		case t.text == ";" && !t.quoted:
			full := strings.Join(scope, "::")
			switch {
			case len(pending) == 2 && pending[0] == "#clear":
				delete(c.values, pending[1])
				delete(c.lists, pending[1])
			case len(pending) == 1 && full != "": // list item
				c.lists[full] = append(c.lists[full], pending[0])
			case len(pending) >= 2:
				key := pending[0]
				if full != "" {
					key = full + "::" + key
				}
				if strings.HasSuffix(key, "::") { // Key:: "value"; appends to a list
					k := strings.TrimSuffix(key, "::")
					c.lists[k] = append(c.lists[k], pending[1])
				} else {
					c.values[key] = setting{key: key, value: pending[1], file: file, line: line}
				}
			}
			pending = nil
		default:
			pending = append(pending, t.text)
		}
	}
}

type aptToken struct {
	text   string
	quoted bool
	line   int
}

func aptTokens(s string) []aptToken {
	var out []aptToken
	line := 1
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case strings.HasPrefix(s[i:], "//") || (c == '#' && !strings.HasPrefix(s[i:], "#clear") && !strings.HasPrefix(s[i:], "#include")):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return out
			}
			line += strings.Count(s[i:i+2+end], "\n")
			i += end + 4
		case c == '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return out
			}
			out = append(out, aptToken{s[i+1 : i+1+end], true, line})
			line += strings.Count(s[i+1:i+1+end], "\n")
			i += end + 2
		case c == '{' || c == '}' || c == ';':
			out = append(out, aptToken{string(c), false, line})
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};\"", rune(s[j])) {
				j++
			}
			out = append(out, aptToken{s[i:j], false, line})
			i = j
		}
	}
	return out
}
