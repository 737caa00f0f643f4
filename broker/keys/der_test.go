package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"math/big"
	"testing"
)

func TestDERToFixedMatchesASN1(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	// Enough signatures that short r or s (leading zero bytes) and high-bit
	// values (a 0x00 pad in DER) both occur.
	for i := range 2000 {
		digest[0], digest[1] = byte(i), byte(i>>8)
		der, err := ecdsa.SignASN1(rand.Reader, priv, digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := derToFixed(der, 32)
		if err != nil {
			t.Fatalf("derToFixed(%x): %v", der, err)
		}
		if want := asn1Fixed(t, der); !bytes.Equal(got, want) {
			t.Fatalf("derToFixed(%x) = %x, want %x", der, got, want)
		}
	}
}

func asn1Fixed(t *testing.T, der []byte) []byte {
	t.Helper()
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		t.Fatalf("asn1: %v", err)
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out
}

func TestDERToFixedRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"not a sequence", []byte{0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}},
		{"length too long", []byte{0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}},
		{"trailing bytes", []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00}},
		{"one integer", []byte{0x30, 0x03, 0x02, 0x01, 0x01}},
		{"three integers", []byte{0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}},
		{"empty integer", []byte{0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x01}},
		{"negative", []byte{0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01}},
		{"non-minimal", []byte{0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01}},
		{"integer too big", append([]byte{0x30, 0x26, 0x02, 0x21, 0x01}, append(make([]byte, 32), 0x02, 0x01, 0x01)...)},
		{"long-form length under 128", []byte{0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := derToFixed(tt.der, 32); err == nil {
				t.Errorf("derToFixed(%x) = %x, want an error", tt.der, got)
			}
		})
	}
}

func FuzzDERToFixed(f *testing.F) {
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	f.Add([]byte{0x30, 0x08, 0x02, 0x02, 0x00, 0x80, 0x02, 0x02, 0x00, 0xff})
	f.Fuzz(func(t *testing.T, der []byte) {
		got, err := derToFixed(der, 32)
		if err != nil {
			return
		}
		// Whatever derToFixed accepts, encoding/asn1 reads the same way.
		var sig struct{ R, S *big.Int }
		rest, aerr := asn1.Unmarshal(der, &sig)
		if aerr != nil || len(rest) != 0 {
			t.Fatalf("derToFixed accepted %x that encoding/asn1 rejects: %v", der, aerr)
		}
		if sig.R.Sign() < 0 || sig.S.Sign() < 0 {
			t.Fatalf("derToFixed accepted negative integers in %x", der)
		}
		want := make([]byte, 64)
		sig.R.FillBytes(want[:32])
		sig.S.FillBytes(want[32:])
		if !bytes.Equal(got, want) {
			t.Fatalf("derToFixed(%x) = %x, want %x", der, got, want)
		}
	})
}
