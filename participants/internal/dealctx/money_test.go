package dealctx

import (
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestCashAmount(t *testing.T) {
	tests := []struct {
		side, qty, price, want string
	}{
		{Buy, "10", "150.00", "1500"},
		{Sell, "10", "150.00", "1500"},
		{Buy, "0.00000001", "0.00000001", "0.00000001"}, // the fuzzer's case: never free, never 16 places
		{Sell, "0.00000001", "0.00000001", "0"},
		{Buy, "0.33333333", "3", "0.99999999"},
		{Buy, "0.5", "0.00000003", "0.00000002"},  // 0.000000015 up
		{Sell, "0.5", "0.00000003", "0.00000001"}, // 0.000000015 down
		{Buy, "1.23456789", "9.87654321", "12.19326312"},
		{Sell, "1.23456789", "9.87654321", "12.19326311"},
		{Buy, "999999999999999999", "1", "999999999999999999"},
	}
	for _, tt := range tests {
		got := CashAmount(tt.side, decimal.RequireFromString(tt.qty), decimal.RequireFromString(tt.price))
		if !got.Equal(decimal.RequireFromString(tt.want)) {
			t.Errorf("CashAmount(%s, %s, %s): got %s, want %s", tt.side, tt.qty, tt.price, got, tt.want)
		}
		if !got.Equal(got.Truncate(AmountPlaces)) {
			t.Errorf("CashAmount(%s, %s, %s) = %s has more than %d places", tt.side, tt.qty, tt.price, got, AmountPlaces)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"100", "100", ""},
		{"0.00000001", "0.00000001", ""},
		{"999999999999999999.99999999", "999999999999999999.99999999", ""},
		{"0", "", "must be positive"},
		{"0.00000000", "", "must be positive"},
		{"-5", "", "must be positive"},
		{"0.000000001", "", "more than 8 decimal places"},
		{"1000000000000000000", "", "more than 18 integer digits"},
		{"1e9", "", "not a decimal number"},
	}
	for _, tt := range tests {
		got, err := ParseAmount(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseAmount(%q): got %v, want an error containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseAmount(%q): got %s (err %v), want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckAmount(t *testing.T) {
	for in, want := range map[string]string{
		"1500":                           "",
		"999999999999999999.99999999":    "",
		"1000000000000000000":            "too large",
		"0.9999999999999999":             "more than 8 decimal places",
		"-1000000000000000000.5":         "too large",
		"123.45600000000000000000000000": "",
	} {
		err := CheckAmount("cash", decimal.RequireFromString(in))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckAmount(%s): got %v, want %q", in, err, want)
		}
	}
}

func TestCanonicalID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d", "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d"},
		{"6F1C2A8E-9A53-4D55-9D3A-0F6A1D2B3C4D", "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d"},
		{"6F1c2a8e-9A53-4d55-9d3a-0f6a1d2b3C4d", "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d"},
		{"{6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d}", ""},
		{"urn:uuid:6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d", ""},
		{"6f1c2a8e9a534d559d3a0f6a1d2b3c4d", ""},
		{"6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4g", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := CanonicalID(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CanonicalID(%q): got %q, want an error", tt.in, got)
			}
			if same := CanonicalOrSame(tt.in); same != tt.in {
				t.Errorf("CanonicalOrSame(%q): got %q, want it unchanged", tt.in, same)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CanonicalID(%q): got %q (err %v), want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestValidateAmountRule(t *testing.T) {
	dc := DealContext{DealID: "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4d", UserID: "alice", PortfolioID: "6f1c2a8e-9a53-4d55-9d3a-0f6a1d2b3c4e",
		Side: Buy, Instrument: "ACME", Quantity: decimal.RequireFromString("0.00000001"), Price: decimal.RequireFromString("0.00000001"),
		Currency: "USD"}
	dc.Amount = dc.Quantity.Mul(dc.Price) // the exact product: 16 places
	if err := dc.Validate(); err == nil || !strings.Contains(err.Error(), "rounded to 8 places") {
		t.Errorf("Validate with the unrounded amount: got %v, want a refusal", err)
	}
	dc.Amount = CashAmount(dc.Side, dc.Quantity, dc.Price)
	if err := dc.Validate(); err != nil {
		t.Errorf("Validate with CashAmount: got %v, want nil", err)
	}
	dc.Quantity, dc.Price = decimal.RequireFromString("999999999999999999"), decimal.RequireFromString("10")
	dc.Amount = CashAmount(dc.Side, dc.Quantity, dc.Price)
	if err := dc.Validate(); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("Validate of a huge amount: got %v, want too large", err)
	}
}
