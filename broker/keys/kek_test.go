package keys_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/broker/keys"
)

func TestParseKEK(t *testing.T) {
	raw := bytes.Repeat([]byte{0xfb, 0xff, 0x3e}, 11)[:32] // bytes that differ between std and url base64
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"std base64", base64.StdEncoding.EncodeToString(raw), ""},
		{"std base64 unpadded", base64.RawStdEncoding.EncodeToString(raw), ""},
		{"url base64", base64.URLEncoding.EncodeToString(raw), ""},
		{"url base64 unpadded", base64.RawURLEncoding.EncodeToString(raw), ""},
		{"hex", hex.EncodeToString(raw), ""},
		{"hex upper", strings.ToUpper(hex.EncodeToString(raw)), ""},
		{"trailing newline", base64.StdEncoding.EncodeToString(raw) + "\n", ""},
		{"empty", "", "KEK is empty"},
		{"16 bytes", base64.StdEncoding.EncodeToString(raw[:16]), "decodes to 16 bytes"},
		{"48 bytes", base64.StdEncoding.EncodeToString(append(raw, raw[:16]...)), "decodes to 48 bytes"},
		{"63 hex digits", hex.EncodeToString(raw)[:63], "decodes to 47 bytes"}, // valid unpadded base64
		{"garbage", "not a key!", "neither base64 nor hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keys.ParseKEK(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKEK: err = %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "base64") || !strings.Contains(err.Error(), "hex") {
					t.Errorf("ParseKEK: err = %v, want it to say what is expected", err)
				}
				if len(tt.in) > 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
					t.Errorf("ParseKEK: error echoes the secret input")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKEK: %v", err)
			}
			if !bytes.Equal(got, raw) {
				t.Errorf("ParseKEK = %x, want %x", got, raw)
			}
		})
	}
}

func TestGenerateKEK(t *testing.T) {
	a, b := keys.GenerateKEK(), keys.GenerateKEK()
	if a == b {
		t.Fatalf("GenerateKEK returned %q twice", a)
	}
	k, err := keys.ParseKEK(a)
	if err != nil {
		t.Fatalf("ParseKEK(GenerateKEK()): %v", err)
	}
	if got, want := len(k), keys.KEKSize; got != want {
		t.Errorf("len(kek) = %d, want %d", got, want)
	}
}
