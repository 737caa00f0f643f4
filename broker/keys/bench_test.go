package keys_test

import (
	"testing"

	"github.com/mandate-dev/mandate/broker/keys"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// benchSign measures the token endpoint's signing step: fetch the active key,
// take its cached header, sign a realistic claim set.
func benchSign(b *testing.B, alg string) {
	m := newManager(b, dbtest.Open(b, db.SQLite), testKEK(b), keys.Options{Alg: alg})
	b.ReportAllocs()
	b.SetBytes(int64(len(claims)))
	for b.Loop() {
		k := m.Active()
		if _, err := k.SignJWS(k.HeaderFor("at+jwt"), claims); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignES256(b *testing.B) { benchSign(b, keys.ES256) }

func BenchmarkSignEdDSA(b *testing.B) { benchSign(b, keys.EdDSA) }

// BenchmarkSignES256Parallel shows signing from many goroutines does not contend.
func BenchmarkSignES256Parallel(b *testing.B) {
	m := newManager(b, dbtest.Open(b, db.SQLite), testKEK(b), keys.Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := m.Active()
			if _, err := k.SignJWS(k.HeaderFor("at+jwt"), claims); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
