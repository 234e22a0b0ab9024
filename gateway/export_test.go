package gateway

import "time"

// SetCertPoll sets how often s looks at its certificate's files; call it
// before Serve.
func SetCertPoll(s *Server, d time.Duration) { s.certPoll = d }
