export { AwsDriver, type AwsDriverOptions } from './aws-driver.js';
export { TAG_HOST_ID, TAG_MANAGED_BY, type AwsDriverConfig, type AwsDriverLogger } from './config.js';
