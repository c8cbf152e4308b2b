package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func newKey(t *testing.T) string {
	k := make([]byte, KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(k)
}

func TestSealOpen(t *testing.T) {
	b, err := ParseKey(newKey(t))
	require.NoError(t, err)
	require.True(t, b.Enabled())
	plain := []byte("hunter2-password")
	sealed, err := b.Seal(plain, []byte("prod"))
	require.NoError(t, err)
	require.False(t, bytes.Contains(sealed, plain))
	again, err := b.Seal(plain, []byte("prod"))
	require.NoError(t, err)
	require.NotEqual(t, sealed, again, "a fresh nonce each time")

	got, err := b.Open(sealed, []byte("prod"))
	require.NoError(t, err)
	require.Equal(t, plain, got)

	_, err = b.Open(sealed, []byte("other"))
	require.Error(t, err, "bound to its context")
	other, err := ParseKey(newKey(t))
	require.NoError(t, err)
	_, err = other.Open(sealed, []byte("prod"))
	require.ErrorContains(t, err, "do not open with this --credentials-key")
	sealed[len(sealed)-1] ^= 1
	_, err = b.Open(sealed, []byte("prod"))
	require.Error(t, err, "altered")
}

func TestNoKey(t *testing.T) {
	b, err := ParseKey("")
	require.NoError(t, err)
	require.False(t, b.Enabled())
	sealed, err := b.Seal([]byte("x"), nil)
	require.NoError(t, err)
	require.Nil(t, sealed)
	_, err = b.Open([]byte{1, 2, 3}, nil)
	require.True(t, errors.Is(err, ErrNoKey))
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		_, err := ParseKey(bad)
		require.ErrorContains(t, err, "want 32 random bytes in base64")
	}
}
