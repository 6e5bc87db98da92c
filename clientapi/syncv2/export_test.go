package syncv2

// SetTestHookBeforeWait sets the hook run between a long-poll's read and its wait.
func SetTestHookBeforeWait(f func()) { testHookBeforeWait = f }
