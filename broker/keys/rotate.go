package keys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
)

// ErrRotationInProgress is returned by Rotate and RotateNow on PostgreSQL when
// another node holds the key lock. That node is doing the work; a caller on a
// timer can ignore it, an operator can retry.
var ErrRotationInProgress = errors.New("rotation in progress on another node")

// advisoryLockKey names mandate's signing-key lock among PostgreSQL advisory
// locks ("mandkeys" in ASCII). Creating the first key and rotating share it.
const advisoryLockKey int64 = 0x6d616e646b657973

// lockKeys takes the signing-key lock for the rest of the transaction q. On
// PostgreSQL that is a transaction-scoped advisory lock, waited for or only
// tried; it reports false when a try found the lock taken. On SQLite the
// transaction is already IMMEDIATE, holding the database's write lock, so there
// is nothing more to take.
func lockKeys(ctx context.Context, d *db.DB, q db.Querier, wait bool) (bool, error) {
	if d.Dialect() != db.Postgres {
		return true, nil
	}
	// The reads after the lock must see what the previous holder committed. Under
	// READ COMMITTED each statement takes a fresh snapshot; under a stricter server
	// default the snapshot could predate the lock and both nodes would act.
	if _, err := q.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`); err != nil {
		return false, fmt.Errorf("set isolation: %w", err)
	}
	if wait {
		if _, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryLockKey); err != nil {
			return false, fmt.Errorf("take key lock: %w", err)
		}
		return true, nil
	}
	var ok bool
	if err := q.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, advisoryLockKey).Scan(&ok); err != nil {
		return false, fmt.Errorf("take key lock: %w", err)
	}
	return ok, nil
}

// Rotate advances key rotation by one step, in one transaction:
//
//   - With no next key, it creates one, published in the JWKS but not signing,
//     and returns.
//   - With a next key published for at least Options.PublishDelay, it makes that
//     key active and retires the active one, which stays published until
//     MaxTokenLifetime + RetireGrace from now.
//   - With a next key published for less, it does nothing.
//
// So a server calls Rotate once to start a rotation and again (say, on its
// reload timer) until the new key signs. On PostgreSQL only one node rotates at
// a time; the others get ErrRotationInProgress. The calling node reloads at
// once; the others see the change at their next Reload.
func (m *Manager) Rotate(ctx context.Context) error {
	if err := m.rotate(ctx, false); err != nil {
		return fmt.Errorf("keys: rotate: %w", err)
	}
	return nil
}

// RotateNow makes a new key active at once (`mandate keys rotate --now`),
// promoting the next key if there is one, whatever its age, or else creating a
// key and activating it directly. Relying parties that cached the JWKS reject the
// new key's tokens until they refetch, so use it when the active key must stop
// signing now, not for routine rotation.
func (m *Manager) RotateNow(ctx context.Context) error {
	if err := m.rotate(ctx, true); err != nil {
		return fmt.Errorf("keys: rotate now: %w", err)
	}
	return nil
}

func (m *Manager) rotate(ctx context.Context, now bool) error {
	changed := false
	err := m.db.InTx(ctx, func(q db.Querier) error {
		ok, err := lockKeys(ctx, m.db, q, false)
		if err != nil {
			return err
		}
		if !ok {
			return ErrRotationInProgress
		}
		t := m.now().Unix()
		var next string
		var created int64
		err = q.QueryRow(ctx, `SELECT kid, created_at FROM signing_keys WHERE state = $1 ORDER BY created_at, kid LIMIT 1`,
			string(StateNext)).Scan(&next, &created)
		switch {
		case errors.Is(err, db.ErrNotFound):
			kid, err := m.insertKey(ctx, q, StateNext, t)
			if err != nil {
				return err
			}
			changed = true
			if !now {
				m.log.InfoContext(ctx, "published next signing key", "kid", kid, "alg", m.alg)
				return nil
			}
			next = kid
		case err != nil:
			return fmt.Errorf("read next key: %w", err)
		case !now && time.Duration(t-created)*time.Second < m.publishDelay:
			m.log.DebugContext(ctx, "next signing key not published long enough to sign",
				"kid", next, "published", time.Unix(created, 0).UTC(), "delay", m.publishDelay)
			return nil
		}
		var old string
		if err := q.QueryRow(ctx, `SELECT kid FROM signing_keys WHERE state = $1 ORDER BY activated_at DESC, kid DESC LIMIT 1`,
			string(StateActive)).Scan(&old); err != nil && !errors.Is(err, db.ErrNotFound) {
			return fmt.Errorf("read active key: %w", err)
		}
		expires := t + int64((m.maxLifetime+RetireGrace)/time.Second)
		if _, err := q.Exec(ctx, `UPDATE signing_keys SET state = $1, retired_at = $2, expires_at = $3 WHERE state = $4`,
			string(StateRetired), t, expires, string(StateActive)); err != nil {
			return fmt.Errorf("retire active key: %w", err)
		}
		n, err := q.Exec(ctx, `UPDATE signing_keys SET state = $1, activated_at = $2 WHERE kid = $3 AND state = $4`,
			string(StateActive), t, next, string(StateNext))
		if err != nil {
			return fmt.Errorf("activate key %q: %w", next, err)
		}
		if n != 1 {
			return fmt.Errorf("activate key %q: %d rows changed, want 1", next, n)
		}
		changed = true
		m.log.InfoContext(ctx, "rotated signing key", "active", next, "retired", old,
			"retired_published_until", time.Unix(expires, 0).UTC())
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		return m.reload(ctx)
	}
	return nil
}

// Prune deletes retired keys whose expires_at has passed (they are no longer
// published, and every token they signed has expired) and returns how many.
func (m *Manager) Prune(ctx context.Context) (int, error) {
	n, err := m.db.Exec(ctx, `DELETE FROM signing_keys WHERE state = $1 AND expires_at <= $2`,
		string(StateRetired), m.now().Unix())
	if err != nil {
		return 0, fmt.Errorf("keys: prune: %w", err)
	}
	if n > 0 {
		m.log.InfoContext(ctx, "pruned expired signing keys", "count", n)
	}
	return int(n), nil
}
