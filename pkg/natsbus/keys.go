package natsbus

import (
	"github.com/zdm-io/zdm/pkg/milvusx"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// KeysPB is keys as a ChangeEvent carries them; nil for none.
func KeysPB(keys []milvusx.Key) *eventspb.PrimaryKeys {
	if len(keys) == 0 {
		return nil
	}
	if keys[0].IsStr {
		v := make([]string, len(keys))
		for i, k := range keys {
			v[i] = k.Str
		}
		return &eventspb.PrimaryKeys{Keys: &eventspb.PrimaryKeys_StringKeys{StringKeys: &eventspb.StringKeys{Values: v}}}
	}
	v := make([]int64, len(keys))
	for i, k := range keys {
		v[i] = k.Int
	}
	return &eventspb.PrimaryKeys{Keys: &eventspb.PrimaryKeys_IntKeys{IntKeys: &eventspb.Int64Keys{Values: v}}}
}

// Keys is the inverse of KeysPB.
func Keys(p *eventspb.PrimaryKeys) []milvusx.Key {
	var out []milvusx.Key
	for _, v := range p.GetIntKeys().GetValues() {
		out = append(out, milvusx.Key{Int: v})
	}
	for _, v := range p.GetStringKeys().GetValues() {
		out = append(out, milvusx.Key{Str: v, IsStr: true})
	}
	return out
}
