package testenv

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Samples are measured durations, for benchmarks that report percentiles
// rather than a mean.
type Samples []time.Duration

// Quantile is the q-quantile (0..1) by the nearest-rank method: with few
// samples, p99 is the largest of them.
func (s Samples) Quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	rank := int(q*float64(len(c))+0.999999) - 1
	return c[min(max(rank, 0), len(c)-1)]
}

// Max is the largest sample.
func (s Samples) Max() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return slices.Max(s)
}

// Min is the smallest sample.
func (s Samples) Min() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return slices.Min(s)
}

// String lists the samples in milliseconds, in the order taken.
func (s Samples) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d < 10*time.Millisecond {
			parts[i] = fmt.Sprintf("%.2f", ms(d))
		} else {
			parts[i] = fmt.Sprintf("%.0f", ms(d))
		}
	}
	return "[" + strings.Join(parts, " ") + "] ms"
}

// Reporter is the part of testing.B that Report needs.
type Reporter interface {
	Helper()
	ReportMetric(n float64, unit string)
	Logf(format string, args ...any)
}

// Report reports p50, p99 and max in milliseconds as benchmark metrics
// (prefix, if not empty, is put before each unit: "first-p50-ms"), and logs
// every sample (or a summary when there are many).
func (s Samples) Report(b Reporter, prefix string) {
	b.Helper()
	if prefix != "" {
		prefix += "-"
	}
	b.ReportMetric(ms(s.Quantile(0.50)), prefix+"p50-ms")
	b.ReportMetric(ms(s.Quantile(0.99)), prefix+"p99-ms")
	b.ReportMetric(ms(s.Max()), prefix+"max-ms")
	if len(s) <= 50 {
		b.Logf("%ssamples (%d): %v", prefix, len(s), s)
		return
	}
	b.Logf("%s%d samples: min %.2f, p50 %.2f, p90 %.2f, p99 %.2f, max %.2f ms", prefix, len(s),
		ms(s.Min()), ms(s.Quantile(0.5)), ms(s.Quantile(0.9)), ms(s.Quantile(0.99)), ms(s.Max()))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
