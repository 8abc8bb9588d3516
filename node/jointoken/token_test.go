package jointoken

import (
	"errors"
	"strings"
	"testing"
)

const testPin = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU" // sha256("") base64url

func TestRoundTrip(t *testing.T) {
	tok, err := New(testPin, []string{"127.0.0.1:7400", "[::1]:7400", "gw1.plant-a.local:7400"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatalf("Parse(String()): %v", err)
	}
	if got.ID != tok.ID || got.Secret != tok.Secret || got.Pin != tok.Pin || strings.Join(got.Addrs, ",") != strings.Join(tok.Addrs, ",") {
		t.Fatalf("round trip changed the token: %+v != %+v", got, tok)
	}
	if strings.Contains(tok.Redacted(), tok.Secret) {
		t.Fatal("Redacted contains the secret")
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := New(testPin, []string{"127.0.0.1:7400"})
	cases := map[string]string{
		"empty":         "",
		"no prefix":     strings.TrimPrefix(good.String(), Prefix),
		"wrong version": "fm2:" + strings.TrimPrefix(good.String(), Prefix),
		"no addr":       Prefix + good.ID + "." + good.Secret + "@" + testPin + "@",
		"bad port":      Prefix + good.ID + "." + good.Secret + "@" + testPin + "@h:99999",
		"no port":       Prefix + good.ID + "." + good.Secret + "@" + testPin + "@host",
		"short secret":  Prefix + good.ID + ".abc@" + testPin + "@h:1",
		"upper id":      Prefix + "ABCDEF." + good.Secret + "@" + testPin + "@h:1",
		"bad pin":       Prefix + good.ID + "." + good.Secret + "@notapin@h:1",
		"extra @":       good.String() + "@x",
		"no dot":        Prefix + good.ID + good.Secret + "@" + testPin + "@h:1",
		"huge":          Prefix + strings.Repeat("a", 5000),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed", name, err)
			}
			if strings.Contains(err.Error(), good.Secret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestSecretIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, err := New(testPin, []string{"h:1"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok.Secret] {
			t.Fatal("duplicate secret")
		}
		seen[tok.Secret] = true
	}
}

func FuzzParse(f *testing.F) {
	good, _ := New(testPin, []string{"127.0.0.1:7400", "[::1]:1"})
	f.Add(good.String())
	f.Add("fm1:abcdef.0123456789abcdef0123456789abcdef@" + testPin + "@a:1")
	f.Add("fm1:@@")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("accepted token does not re-parse: %v", err)
		}
		if again.String() != tok.String() {
			t.Fatalf("not canonical: %q vs %q", again.String(), tok.String())
		}
	})
}
