package platform

import "google.golang.org/grpc/codes"

// ServerFault reports whether a call that ended with code failed because of
// the server, or what it depends on, rather than because of what the caller
// sent or did. The error-ratio alerts count these codes only
// (infra/prometheus/rules.yml; a test keeps both lists equal).
//
// DEADLINE_EXCEEDED counts: the server did not answer in the time the caller
// gave. INVALID_ARGUMENT, RESOURCE_EXHAUSTED (a message over the limit),
// UNIMPLEMENTED (a method this server does not have), CANCELLED and the
// other codes are the caller's.
func ServerFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// ServerFaultCodes returns the codes ServerFault accepts, in code order.
func ServerFaultCodes() []codes.Code {
	var out []codes.Code
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if ServerFault(c) {
			out = append(out, c)
		}
	}
	return out
}
