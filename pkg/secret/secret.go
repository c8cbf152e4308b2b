// Package secret seals cluster credentials before they are stored on the
// bus (JetStream KV keeps them on disk, in every replica): AES-256-GCM
// from the standard library, with a key the operator gives zdm.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// KeySize is the size of a key in bytes (AES-256).
const KeySize = 32

// version prefixes every sealed value, so the format can change.
const version = 1

// ErrNoKey is returned when a sealed value is opened without a key.
var ErrNoKey = errors.New("credentials are sealed, but zdm has no --credentials-key; start it with the key they were sealed with")

// Box seals and opens values. A nil *Box has no key: Seal returns nil and
// Open fails with ErrNoKey.
type Box struct {
	aead cipher.AEAD
}

// ParseKey returns a Box for a base64 key of KeySize bytes (as made by
// `openssl rand -base64 32`); the empty string gives a nil Box.
func ParseKey(b64 string) (*Box, error) {
	if b64 == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("--credentials-key: want %d random bytes in base64 (openssl rand -base64 %d)", KeySize, KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Enabled reports whether b has a key.
func (b *Box) Enabled() bool { return b != nil }

// Seal encrypts plain, binding it to context (for example the cluster ID,
// so a sealed value cannot be moved to another record). It returns nil
// when b has no key.
func (b *Box) Seal(plain, context []byte) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{version}, nonce...)
	return b.aead.Seal(out, nonce, plain, context), nil
}

// Open decrypts what Seal made with the same context. Errors: ErrNoKey
// without a key; an error naming the key when it is the wrong one or the
// value was altered.
func (b *Box) Open(sealed, context []byte) ([]byte, error) {
	if b == nil {
		return nil, ErrNoKey
	}
	n := b.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != version {
		return nil, errors.New("sealed credentials: unknown format")
	}
	plain, err := b.aead.Open(nil, sealed[1:1+n], sealed[1+n:], context)
	if err != nil {
		return nil, errors.New("sealed credentials do not open with this --credentials-key (another key sealed them, or they were altered)")
	}
	return plain, nil
}
