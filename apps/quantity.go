package apps

import (
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
)

var memorySuffixes = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
	{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
}

// ParseMemory reads a memory quantity in the Kubernetes notation: a number
// of bytes with an optional binary (Ki, Mi, Gi, Ti, Pi, Ei) or decimal (k, M,
// G, T, P, E) suffix: 64Mi, 1Gi, 500M, 1.5Gi, 134217728. It returns bytes.
func ParseMemory(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty memory quantity")
	}
	num, mult := s, int64(1)
	for _, sf := range memorySuffixes {
		if strings.HasSuffix(s, sf.suffix) {
			num, mult = strings.TrimSuffix(s, sf.suffix), sf.mult
			break
		}
	}
	r, ok := parseDecimal(num)
	if !ok {
		if i := strings.IndexFunc(s, func(c rune) bool { return (c < '0' || c > '9') && c != '.' }); i >= 0 {
			return 0, errors.New("unknown unit " + strconv.Quote(s[i:]) + "; use bytes or a suffix Ki, Mi, Gi (binary) or k, M, G (decimal), e.g. 64Mi")
		}
		return 0, errors.New("not a number of bytes; write e.g. 64Mi, 1Gi or 500M")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, errors.New("not a whole number of bytes")
	}
	if r.Num().Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return 0, errors.New("too large")
	}
	return r.Num().Int64(), nil
}

// ParseCPU reads a cpu quantity: whole or fractional cores ("1", 0.5) or
// millicores ("250m"). It returns millicores.
func ParseCPU(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty cpu quantity")
	}
	num, mult := s, int64(1000)
	if strings.HasSuffix(s, "m") {
		num, mult = strings.TrimSuffix(s, "m"), 1
	}
	r, ok := parseDecimal(num)
	if !ok {
		return 0, errors.New("not a cpu quantity; write cores (\"1\", 0.5) or millicores (\"250m\")")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, errors.New("finer than a millicore")
	}
	if r.Num().Cmp(big.NewInt(1<<40)) > 0 {
		return 0, errors.New("too large")
	}
	return r.Num().Int64(), nil
}

// parseDecimal accepts plain non-negative decimals only (no signs, exponents
// or fractions like 1/2, which big.Rat would otherwise take).
func parseDecimal(s string) (*big.Rat, bool) {
	if s == "" || strings.Count(s, ".") > 1 || s == "." {
		return nil, false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' {
			return nil, false
		}
	}
	if len(s) > 30 {
		return nil, false
	}
	return new(big.Rat).SetString(s)
}
