package node_test

import (
	"encoding/json"
	"fmt"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
