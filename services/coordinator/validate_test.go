package coordinator

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/validate"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// malformedIDs are IDs every ID field refuses, with what the message says.
var malformedIDs = []struct{ id, says string }{
	{"has space", `"has space"`},
	{"*", `"*"`},
	{"UPPER", `"UPPER"`},
	{"a.b", `"a.b"`},
	{"Prod_A", `"Prod_A"`},
	{"-lead", `"-lead"`},
	{"9lives", `"9lives"`},
	{"a\x00b", `"a\x00b"`},
	{strings.Repeat("a", 64), "64 bytes long"},
	{strings.Repeat("a", 100_000), "100000 bytes long"},
}

// apiRequests returns a new, empty request of every method of the public
// API, by method name, from the registered descriptors: a method added to
// the protos is in here without anyone listing it.
func apiRequests(t *testing.T) map[string]proto.Message {
	t.Helper()
	out := map[string]proto.Message{}
	for _, svc := range []protoreflect.FullName{"zdm.v1.MigrationService", "zdm.v1.ClusterService"} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(svc)
		require.NoError(t, err)
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
			require.NoError(t, err)
			out[string(m.Name())] = mt.New().Interface()
		}
	}
	require.GreaterOrEqual(t, len(out), 14, "MigrationService has 10 methods, ClusterService 4")
	return out
}

// idFields are a request's string fields that hold IDs, by their name.
func idFields(m proto.Message) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	fields := m.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Kind() == protoreflect.StringKind && !f.IsList() && strings.HasSuffix(string(f.Name()), "_id") {
			out = append(out, f)
		}
	}
	return out
}

// TestEveryRequestHasIDRule proves that checkIDs knows every request of
// the public API, every ID field of each, and no field that is not there.
func TestEveryRequestHasIDRule(t *testing.T) {
	for name, req := range apiRequests(t) {
		t.Run(name, func(t *testing.T) {
			ids, ok := requestIDs(req)
			require.True(t, ok, "requestIDs has no row for %T", req)
			listed := map[string]bool{}
			for _, f := range ids {
				require.NotNil(t, req.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(f.field)),
					"%T has no field %q", req, f.field)
				listed[f.field] = true
			}
			for _, f := range idFields(req) {
				require.True(t, listed[string(f.Name())], "%T.%s is not checked", req, f.Name())
			}
		})
	}
	_, ok := requestIDs(&zdmpb.Cluster{})
	require.False(t, ok)
	require.Error(t, checkIDs(&zdmpb.Cluster{}))
}

// TestCheckIDsRefusesMalformed sets each ID field of each request, in turn,
// to each malformed ID (and to "" where it is required), the other ID
// fields well-formed.
func TestCheckIDsRefusesMalformed(t *testing.T) {
	for name, req := range apiRequests(t) {
		fields := idFields(req)
		ids, _ := requestIDs(req)
		isOptional := map[string]bool{}
		for _, f := range ids {
			isOptional[f.field] = f.optional
		}
		for _, field := range fields {
			t.Run(name+"/"+string(field.Name()), func(t *testing.T) {
				with := func(v string) proto.Message {
					m := proto.Clone(req)
					for i, f := range fields {
						m.ProtoReflect().Set(f, protoreflect.ValueOfString("ok-"+string(rune('a'+i))))
					}
					m.ProtoReflect().Set(field, protoreflect.ValueOfString(v))
					return m
				}
				require.NoError(t, checkIDs(with("good-id-1")))
				for _, bad := range malformedIDs {
					err := checkIDs(with(bad.id))
					require.ErrorIs(t, err, apierr.ErrInvalidArgument, "%q", bad.id)
					require.ErrorContains(t, err, string(field.Name()))
					require.ErrorContains(t, err, bad.says)
					require.ErrorContains(t, err, validate.IDForm)
				}
				err := checkIDs(with(""))
				if isOptional[string(field.Name())] {
					require.NoError(t, err, "%s is optional", field.Name())
					return
				}
				require.ErrorIs(t, err, apierr.ErrInvalidArgument)
				require.ErrorContains(t, err, string(field.Name())+" is required")
			})
		}
	}
}

func TestCheckIDsAcceptsTheWholeForm(t *testing.T) {
	for _, id := range []string{"a", "prod-a", "m-0a1b2c3d", "a-", strings.Repeat("a", 63)} {
		require.NoError(t, checkIDs(&zdmpb.GetClusterRequest{ClusterId: id}), id)
	}
	require.NoError(t, checkIDs(&zdmpb.ListMigrationsRequest{}), "cluster_id is an optional filter")
	require.NoError(t, checkIDs(&zdmpb.CreateMigrationRequest{SourceClusterId: "s", TargetClusterId: "t"}), "migration_id is optional")
}

func TestPageTokens(t *testing.T) {
	key := "00001772366400000000/m-1"
	tok := migrationPages.token(key)
	got, err := migrationPages.after(tok)
	require.NoError(t, err)
	require.Equal(t, key, got)
	got, err = clusterPages.after(clusterPages.token("prod-a"))
	require.NoError(t, err)
	require.Equal(t, "prod-a", got)
	got, err = clusterPages.after("")
	require.NoError(t, err)
	require.Empty(t, got, "no token: the first page")

	b64 := base64.RawURLEncoding.EncodeToString
	for _, tc := range []struct {
		name string
		list pageList
		tok  string
	}{
		{"not base64", clusterPages, "%%%"},
		{"garbage", clusterPages, "garbage"},
		{"garbage", migrationPages, "garbage"},
		{"the old format", clusterPages, b64([]byte("prod-a"))},
		{"the old format", migrationPages, b64([]byte(key))},
		{"the other list's", clusterPages, migrationPages.token(key)},
		{"the other list's", migrationPages, clusterPages.token("prod-a")},
		{"truncated by one", migrationPages, tok[:len(tok)-1]},
		{"truncated by four", migrationPages, tok[:len(tok)-4]},
		{"truncated to the checksum", migrationPages, tok[:11]},
		{"altered", migrationPages, tok[:len(tok)-2] + "AA"},
		{"a key of the wrong form", clusterPages, clusterPages.token("Has Space")},
		{"a key of the wrong form", migrationPages, migrationPages.token("prod-a")},
		{"another version", clusterPages, seal("2:clusters:prod-a")},
		{"no list", clusterPages, seal("1:prod-a")},
		{"no checksum", clusterPages, b64([]byte("1:clusters:prod-a"))},
		{"too long", clusterPages, strings.Repeat("A", maxTokenLen+1)},
	} {
		t.Run(tc.list.name+"/"+tc.name, func(t *testing.T) {
			_, err := tc.list.after(tc.tok)
			require.True(t, errors.Is(err, apierr.ErrInvalidArgument), "%v", err)
			require.ErrorContains(t, err, "page_token is not one this server issued")
		})
	}
}
