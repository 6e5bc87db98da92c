package federationapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// maxTxnIDBytes bounds the transaction ID, which is kept per origin.
const maxTxnIDBytes = 255

// pduResult is one PDU's entry in a /send answer: empty when it was
// accepted (or soft-failed), the reason otherwise.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// send is PUT /v1/send/{txnId}: the transaction's PDUs go to the ingest
// engine, which answers a result per PDU (rejections are results, not a
// failed request, as the spec says); a repeated transaction ID gets the first
// answer again.
func (a *API) send(r *http.Request) (any, error) {
	txnID := mxhttp.PathParam(r, "txnId")
	if txnID == "" || len(txnID) > maxTxnIDBytes {
		return nil, mxhttp.InvalidParam("Invalid transaction ID")
	}
	body, err := mxhttp.ReadRawJSON(r)
	if err != nil {
		return nil, err
	}
	results, err := a.txns.Transaction(r.Context(), federation.Origin(r.Context()), txnID, body)
	if err != nil {
		return nil, err
	}
	pdus := make(map[string]pduResult, len(results))
	for id, reason := range results {
		pdus[id] = pduResult{Error: reason}
	}
	return map[string]any{"pdus": pdus}, nil
}
