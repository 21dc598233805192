// GraftEngine: merge / convert / diff as parallel per-tensor jobs.
import SafeTensors
