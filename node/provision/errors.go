package provision

import "errors"

// Errors of this package. Validation failures are a *ValidationError, which
// matches ErrInvalidProfile with errors.Is.
var (
	ErrInvalidProfile  = errors.New("invalid device profile")
	ErrNoBootPartition = errors.New("no FAT boot partition found")
	ErrWrongArch       = errors.New("binary is not for the device's architecture")
	ErrVerifyFailed    = errors.New("verification failed: the device does not hold the image")
	ErrUnsafeTarget    = errors.New("refusing to write to this device")
	ErrOutputExists    = errors.New("output directory exists and is not empty")
)
