package coordinator

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"

	"github.com/zdm-io/zdm/pkg/validate"
)

// Page tokens are opaque to callers. Inside, a token is the last key of
// the page before, after a format version and the name of its list, and
// sealed with a checksum: a token altered, truncated or issued by the
// other list is refused rather than silently paging from elsewhere. The
// checksum guards against mistakes, not forgery; a forged token can only
// start a page at a key of the right form.

const (
	tokenVersion = "1"
	tokenSumSize = 8
	// maxTokenLen bounds a token: the checksum, the prefix and the longer
	// key (a migration's list key) in base64.
	maxTokenLen = 200
)

// pageList is a list that the API pages through.
type pageList struct {
	name string
	key  *regexp.Regexp // the form of its keys
}

var (
	clusterPages = pageList{name: "clusters", key: regexp.MustCompile(`^` + validate.IDExpr + `$`)}
	// migrationPages are keyed by listKey: create time in nanoseconds,
	// 20 digits, then '/' and the ID.
	migrationPages = pageList{name: "migrations", key: regexp.MustCompile(`^[0-9]{20}/` + validate.IDExpr + `$`)}
)

var errBadToken = bad("page_token is not one this server issued: pass next_page_token from the previous reply unchanged, or none to start again")

func (l pageList) prefix() string { return tokenVersion + ":" + l.name + ":" }

// token returns the token for the page after key.
func (l pageList) token(key string) string { return seal(l.prefix() + key) }

// seal puts body's checksum before it, then encodes both.
func seal(body string) string {
	sum := sha256.Sum256([]byte(body))
	return base64.RawURLEncoding.EncodeToString(append(sum[:tokenSumSize:tokenSumSize], body...))
}

// after returns the key that tok says the page starts after, "" for no
// token. A token that is not one of this list's is INVALID_ARGUMENT.
func (l pageList) after(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	if len(tok) > maxTokenLen {
		return "", errBadToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) < tokenSumSize {
		return "", errBadToken
	}
	sum := sha256.Sum256(raw[tokenSumSize:])
	if !bytes.Equal(sum[:tokenSumSize], raw[:tokenSumSize]) {
		return "", errBadToken
	}
	key, ok := strings.CutPrefix(string(raw[tokenSumSize:]), l.prefix())
	if !ok || !l.key.MatchString(key) {
		return "", errBadToken
	}
	return key, nil
}
