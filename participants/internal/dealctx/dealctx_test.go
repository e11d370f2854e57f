package dealctx

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"10", "10", ""},
		{"150.25", "150.25", ""},
		{"-3.5", "-3.5", ""},
		{"0.00000001", "0.00000001", ""},
		{"000123", "123", ""},
		{"123456789012345678", "123456789012345678", ""},
		{"1234567890123456789", "", "more than 18 integer digits"},
		{"0.123456789", "", "more than 8 decimal places"},
		{"1e3", "", "not a decimal number"},
		{"1.", "", "not a decimal number"},
		{".5", "", "not a decimal number"},
		{" 1", "", "not a decimal number"},
		{"", "", "not a decimal number"},
		{"NaN", "", "not a decimal number"},
	}
	for _, tt := range tests {
		got, err := ParseDecimal(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseDecimal(%q): got %v, want error containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseDecimal(%q): got %s (err %v), want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestMoney(t *testing.T) {
	for in, want := range map[string]string{"1500": "1500.00", "200.5": "200.50", "0.125": "0.125", "150.00": "150.00", "848.09260509": "848.09260509", "1500.00000000": "1500.00", "0.10000000": "0.10", "0.12300000": "0.123"} {
		if got := Money(decimal.RequireFromString(in)); got != want {
			t.Errorf("Money(%s): got %s, want %s", in, got, want)
		}
	}
}

func TestFromCommand(t *testing.T) {
	good := `{"deal_context":{"deal_id":"6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d","user_id":"alice","portfolio_id":"6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4e",
		"side":"buy","instrument":"AAPL","quantity":"10","price":"150.00","amount":"1500","currency":"USD"},"other":{"kept":true}}`
	var env Envelope
	if err := json.Unmarshal([]byte(good), &env); err != nil {
		t.Fatal(err)
	}
	dc, err := FromCommand(env)
	if err != nil || dc.Describe() != "buy of 10 AAPL at 150.00 USD" {
		t.Errorf("FromCommand: got %q (err %v)", dc.Describe(), err)
	}
	if _, err := FromCommand(Envelope{}); err == nil || !strings.Contains(err.Error(), "no deal_context") {
		t.Errorf("FromCommand without deal_context: got %v", err)
	}
	bad := dc
	bad.Side, bad.Currency, bad.UserID = "hold", "usd", ""
	err = bad.Validate()
	for _, want := range []string{`side "hold"`, `currency "usd"`, "user_id is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: got %v, want it to mention %s", err, want)
		}
	}
	out, _ := json.Marshal(Wrap(dc))
	if !strings.Contains(string(out), `"quantity":"10"`) || strings.Contains(string(out), `"status"`) {
		t.Errorf("Wrap: got %s, want decimals as strings and no empty status", out)
	}
}
