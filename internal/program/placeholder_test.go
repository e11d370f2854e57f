package program

import (
	"strings"
	"testing"
)

func TestRefusePlaceholders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secrets []Secret
		wantErr []string // names the error must mention; nil: no error
	}{
		{"none", nil, nil},
		{"real secrets", []Secret{{"--kafka-password", "s3cret"}, {"--db", "postgres://saga:pw@db/saga"}}, nil},
		{"empty is not checked", []Secret{{"--kafka-password", ""}}, nil},
		{"password is the placeholder", []Secret{{"--kafka-password (SAGA_KAFKA_PASSWORD)", "CHANGE_ME"}}, []string{"--kafka-password (SAGA_KAFKA_PASSWORD)"}},
		{"lower case", []Secret{{"--kafka-password", "change_me"}}, []string{"--kafka-password"}},
		{"database URL", []Secret{{"--db (SAGA_DB_URL)", "postgres://saga:CHANGE_ME@otus-pg:5432/saga?sslmode=disable"}}, []string{"--db (SAGA_DB_URL)"}},
		{"percent-encoded in a URL", []Secret{{"--db", "postgres://saga:CHANGE%5FME@db/saga"}}, []string{"--db"}},
		{"inside a longer value", []Secret{{"OIDC_CLIENT_SECRET", "xCHANGE_MEx"}}, []string{"OIDC_CLIENT_SECRET"}},
		{"two at once", []Secret{{"--db", "postgres://u:CHANGE_ME@h/d"}, {"--ok", "fine"}, {"--kafka-password", "CHANGE_ME"}}, []string{"--db", "--kafka-password"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := RefusePlaceholders(tc.secrets...)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("RefusePlaceholders = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("RefusePlaceholders = nil, want an error naming %v", tc.wantErr)
			}
			for _, name := range tc.wantErr {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
			for _, s := range tc.secrets {
				if s.Value != "" && s.Value != "CHANGE_ME" && strings.Contains(err.Error(), s.Value) {
					t.Errorf("error %q shows the value of %s", err, s.Name)
				}
			}
			if strings.Contains(err.Error(), "--ok") {
				t.Errorf("error %q names a setting without the placeholder", err)
			}
		})
	}
}
